"""DVC stage `lt`: one lottery-ticket round, e.g. `--scenario black --seed 0 --round 3` (prune round 2,
rewind, train round 3). See classprune.lottery.runner.train_round."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("lt")
