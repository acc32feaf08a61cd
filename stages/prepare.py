"""DVC stage `prepare`: see classprune.cli.STEPS."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("prepare")
