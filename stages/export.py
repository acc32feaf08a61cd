"""DVC stage `export`: see classprune.edge.export / classprune.cli."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("export")
