"""DVC stage `pretrain`: W0's conv features learned once on the synthetic source task (model.pretrained:
source). See classprune.models.pretrain.pretrain."""
from classprune.cli import run_stage

if __name__ == "__main__":
    run_stage("pretrain")
