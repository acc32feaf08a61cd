"""DVC stage `verdicts`: every claim of reports/evidence/hypotheses.yaml tested on the committed rounds of each
network and bit set. See classprune.evidence.report.write_verdicts."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("verdicts")
