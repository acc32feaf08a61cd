"""DVC stage `eval_ch`: every round of a channel ticket, with its MACs and parameters. See
classprune.cli.STEPS."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("eval_ch")
