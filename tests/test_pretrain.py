"""Pretrained W0: source-task features shared by every seed and scenario, a fresh seeded head per seed."""
from pathlib import Path

import pytest
import torch
import yaml

from classprune import io, pipeline
from classprune.config import Params
from classprune.errors import CheckpointError, ConfigError, DataError
from classprune.model import build_model
from classprune.pretrain import build_w0, pretrain_features
from classprune.train import train_masked

ROOT = Path(__file__).resolve().parents[1]


def _features(seed=123):
    return build_model("none", seed=seed).features.state_dict()


def _head(state):
    return {k: v for k, v in state.items() if k.startswith("classifier.")}


def test_source_task_is_learnable(tmp_path):
    """A short pretraining run already classifies the 8 held-out source classes far above chance (1/8)."""
    result = pretrain_features(tmp_path / "f.pt", steps=250, n_per_class=100, n_check_per_class=25, seed=0)
    assert result["accuracy"] >= 0.7, result
    assert result["final_loss"] < 0.5 * result["chance_loss"]
    saved = io.load_torch(tmp_path / "f.pt")
    assert saved.keys() == _features().keys()
    assert all(torch.equal(saved[k], result["features"][k]) for k in saved)
    build_w0(saved, seed=0)  # loads into the target network


def test_w0_shares_features_across_seeds_and_scenarios(tmp_path, monkeypatch):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["run"]["seeds"] = [0, 1]
    params = Params.model_validate(raw)
    assert params.model.pretrained == "source"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="pretrain"):
        pipeline.init(params, "red", 0)
    features = _features()
    io.save_torch(pipeline.PRETRAINED_FEATURES, features)
    w0 = {}
    for scenario in ("red", "black"):
        for seed in (0, 1):
            pipeline.init(params, scenario, seed)
            w0[scenario, seed] = io.load_torch(pipeline.round_paths(params, scenario, seed, 0).rewound)
    for state in w0.values():
        assert all(torch.equal(state[f"features.{k}"], v) for k, v in features.items())
    for seed in (0, 1):  # every scenario of a seed starts from the same W0
        assert all(torch.equal(w0["red", seed][k], w0["black", seed][k]) for k in w0["red", seed])
    head0, head1 = _head(w0["red", 0]), _head(w0["red", 1])
    assert all(not torch.equal(head0[k], head1[k]) for k in head0 if k.endswith("weight"))


def test_build_model_source_needs_matching_features():
    with pytest.raises(ValueError, match="features"):
        build_model("source")
    with pytest.raises(ValueError, match="features"):
        build_model("none", features=_features())
    bad = dict(_features())
    bad["0.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(CheckpointError, match="do not fit"):
        build_w0(bad, seed=0)


def test_on_step_records_the_late_rewind_point(tiny_loader):
    """Late rewinding's hook: the state after step k is neither the start nor the end of the round."""
    from classprune.losses import ClassDependentLoss
    from classprune.masks import full_mask

    def run(k):
        model = build_model(seed=0)
        start = {n: v.clone() for n, v in model.state_dict().items()}
        snap = {}
        torch.manual_seed(0)
        train_masked(model, full_mask(model), tiny_loader, ClassDependentLoss([1.0, 1.0], 0.0), 4, lr=0.05,
                     grad_clip=1.0, on_step=lambda step, m: snap.update(
                         {n: v.detach().clone() for n, v in m.state_dict().items()}) if step == k else None)
        return start, snap, model.state_dict()

    _, at4, end4 = run(4)
    assert all(torch.equal(end4[n], at4[n]) for n in end4)
    start, at2, end2 = run(2)
    w = "classifier.6.weight"
    assert not torch.equal(at2[w], start[w]) and not torch.equal(at2[w], end2[w])


def test_rewind_iteration_within_round_one(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    assert raw["prune"]["rewind_iteration"] == 0
    raw["prune"]["rewind_iteration"] = raw["train"]["iterations"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    from classprune.config import load_params

    with pytest.raises(ConfigError, match="rewind_iteration"):
        load_params(path)
