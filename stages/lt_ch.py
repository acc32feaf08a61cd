"""DVC stage `lt_ch`: one round of a channel ticket (prune whole channels of round k-1, rewind, train
the compact network). See classprune.lottery.train_round."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("lt_ch")
