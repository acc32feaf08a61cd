"""DVC stage `prepare`: see classprune.pipeline / classprune.cli."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("prepare")
