"""DVC stage `init_ch`: round 0 of a scenario's channel ticket. See classprune.cli.STEPS."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("init_ch")
