"""DVC stage `reinit`: the random-reinit control of a channel ticket. See classprune.lottery.reinit."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("reinit")
