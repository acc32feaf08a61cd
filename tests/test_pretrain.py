"""Pretrained W0: source-task features shared by every seed and scenario, a fresh seeded head per seed."""
from pathlib import Path

import pytest
import torch
import yaml

from classprune import io, paths
from classprune.lottery import runner as lottery
from classprune.config import Params
from classprune.errors import CheckpointError, ConfigError, DataError
from classprune.models.network import build_model
from classprune.models.pretrain import build_w0, pretrain_features

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
        lottery.init(params, "red", 0)
    features = _features()
    io.save_torch(paths.PRETRAINED_FEATURES, features)
    w0 = {}
    for scenario in ("red", "black"):
        for seed in (0, 1):
            lottery.init(params, scenario, seed)
            w0[scenario, seed] = io.load_torch(paths.round_paths(params, scenario, seed, 0).rewound)
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


def test_late_rewinding_rewinds_to_the_round_one_weights_after_k_steps(tmp_path, monkeypatch):
    """prune.rewind_iteration k: round 1's rewind point is W after k of its n steps (k = 0: W0)."""
    from classprune.data import cache, sources, split, synthetic

    synthetic.generate(tmp_path / "raw", n_positive=8, n_negative=24, image_size=64, seed=0)
    manifest = split.imbalanced_split(sources.index_crack(tmp_path / "raw"), n_negative=24, n_positive=8, seed=0)
    cache.build_cache(manifest, tmp_path / "data" / "cache", 64)
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["pretrained"] = "none"
    raw["data"]["augment"] = "none"
    raw["train"].update(iterations=3, warmup=1, batch_size=8, loader_workers=0, threads=1)
    raw["run"]["seeds"] = [0]

    def rewind_point(k):
        raw["prune"]["rewind_iteration"] = k
        params = Params.model_validate(raw)
        lottery.init(params, "red", 0)
        lottery.train_round(params, "red", 0, 1)
        r0, r1 = paths.round_paths(params, "red", 0, 0), paths.round_paths(params, "red", 0, 1)
        return io.load_torch(r0.rewound), io.load_torch(r1.rewound), io.load_torch(r1.weights)

    w = "classifier.6.weight"
    w0, start, trained = rewind_point(0)
    assert torch.equal(start[w], w0[w]) and not torch.equal(trained[w], w0[w])
    for k in (1, 2):
        w0_again, start, trained = rewind_point(k)
        assert torch.equal(w0_again[w], w0[w])  # W0 itself is unchanged
        assert not torch.equal(start[w], w0[w]) and not torch.equal(start[w], trained[w])
    assert not torch.equal(rewind_point(1)[1][w], start[w])  # after 1 step != after 2 steps


def test_rewind_iteration_within_round_one(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    assert raw["prune"]["rewind_iteration"] == 0
    raw["prune"]["rewind_iteration"] = raw["train"]["iterations"] + 1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    from classprune.config import load_params

    with pytest.raises(ConfigError, match="rewind_iteration"):
        load_params(path)
