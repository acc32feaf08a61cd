"""Real-photograph check: the default settings must learn on photographs, not only on the generator."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from classprune.data.real_photos import write_real_photo_set
from classprune.data.sources import index_crack
from classprune.data.synthetic import darkest_pixel_auc
from classprune.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_layout_deterministic_and_no_grey_level_shortcut(tmp_path):
    a = write_real_photo_set(tmp_path / "a", seed=0, n_positive=20, n_negative=60)
    write_real_photo_set(tmp_path / "b", seed=0, n_positive=20, n_negative=60)
    assert sorted(a["label"]) == [0] * 60 + [1] * 20
    assert len(index_crack(tmp_path / "a")) == 80
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
               for p in ("Positive/00003.jpg", "Negative/00041.jpg"))
    images = np.stack([np.asarray(Image.open(p)) for p in a["path"]])
    assert images.shape == (80, 64, 64, 3)
    # every patch is histogram-equalised: darkness and mean grey say nothing about the class
    assert 0.25 <= darkest_pixel_auc(images, a["label"].to_numpy()) <= 0.75
    with pytest.raises(DataError):
        write_real_photo_set(tmp_path / "c", n_positive=0)


@pytest.mark.slow
def test_default_settings_learn_on_real_photographs(tmp_path, monkeypatch):
    """Dense (round-1) red and black from the pretrained W0 reach test AUC >= 0.9 by params alone."""
    import torch

    from classprune import io, paths
    from classprune.evaluation import evaluate as evaluation
    from classprune.lottery import runner as lottery
    from classprune.data import steps
    from classprune.models.pretrain import pretrain as pretrain_step
    from classprune.config import Params
    from classprune.lottery.masks import load_mask

    write_real_photo_set(tmp_path / "photos", seed=0)  # 180 positives, 1620 negatives
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="crack", root=str(tmp_path / "photos"), n_positive=180, n_negative=1620)
    params = Params.model_validate(raw)
    assert params.model.pretrained == "source"
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    steps.prepare(params)
    steps.split(params)
    steps.cache(params)
    pretrain_step(params)
    for scenario in ("red", "black"):
        lottery.init(params, scenario, 0)
        lottery.train_round(params, scenario, 0, 1)  # round 1: the dense model
        r1 = paths.round_paths(params, scenario, 0, 1)
        model = lottery.build(params, 0, io.load_torch(r1.weights))
        test = evaluation.evaluate_model(params, model, load_mask(r1.mask))["test"]
        op = test["op"]
        print(f"real photos, dense {scenario}: test AUC {test['auc']:.4f} FNR {test['fnr']:.3f} FPR {test['fpr']:.3f}"
              f" (argmax), FNR {op['fnr']:.3f} FPR {op['fpr']:.3f} (val operating point)")
        assert test["auc"] >= 0.9, (scenario, test)
        # not a constant predictor where the pipeline decides (the operating point chosen on val, what the FN
        # budget ships). At argmax, red's plain cross-entropy on 10 % positives is a knife edge: its dense model
        # predicted some positives on AMD EPYC and none on an Intel Xeon (AUC 0.986, train.cpu_isa avx2 both);
        # the class-dependent loss is asked to hold there too.
        assert 0 < op["tp"] + op["fp"] < op["n"], (scenario, op)
        if scenario == "black":
            assert 0 < test["tp"] + test["fp"] < test["n"], (scenario, test)
