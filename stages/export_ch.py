"""DVC stage `export_ch`: see classprune.edge.compaction / classprune.cli."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("export_ch")
