"""DVC stage `lt_ch`: a scenario's channel ticket, every round in one process (rounds 0 and 1 from the weight
chain, then prune whole channels, rewind, train the compact network). See classprune.lottery.runner.run_channel_chain."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("lt_ch")
