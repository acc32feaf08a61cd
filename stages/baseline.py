"""DVC stage `baseline`: one comparison method for one seed, e.g. `--method snip --seed 0`.

See classprune.baselines.common.run_baseline / classprune.cli.
"""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("baseline")
