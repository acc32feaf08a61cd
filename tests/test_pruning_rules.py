"""The pruning options of the lottery-ticket literature (ignored layers, per-layer rates, both criteria) and
the diagnosis that tells why a ticket died."""
import numpy as np
import pytest
import torch

from classprune.evaluation import diagnose
from classprune.config import load_params
from classprune.errors import ConfigError
from classprune.lottery.masks import full_mask, remaining, remaining_all
from classprune.constants import NUM_PARAMETERS
from classprune.models.network import build_model
from classprune.lottery.pruning import prune


def _moved(state, seed=0, scale=0.01):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in state.items()}


def test_ignored_tensor_is_never_pruned_and_counts_as_kept():
    model = build_model(seed=0, dropout=0.0)
    w0 = model.state_dict()
    mask = full_mask(model, include_biases=False, ignore=["classifier.6.weight"])
    assert "classifier.6.weight" not in mask and not any(n.endswith(".bias") for n in mask)
    for k in range(1, 5):
        mask = prune(_moved(w0, k), w0, mask, 0.5, "global", "magnitude")
    n_unpruned = NUM_PARAMETERS - sum(m.numel() for m in mask.values())
    assert n_unpruned > 0
    assert remaining(mask) == pytest.approx(0.5 ** 4, abs=1e-4)
    # over all parameters the biases and the output layer are kept: a little more than 1/16
    expected = (sum(int(m.sum()) for m in mask.values()) + n_unpruned) / NUM_PARAMETERS
    assert remaining_all(mask, NUM_PARAMETERS) == pytest.approx(expected) and expected > remaining(mask)


def test_unknown_ignored_tensor_is_a_one_line_error():
    with pytest.raises(ConfigError, match="classifier.9.weight"):
        full_mask(build_model(seed=0), ignore=["classifier.9.weight"])


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_layer_rate_prunes_that_tensor_at_its_own_rate(scope):
    model = build_model(seed=0, dropout=0.0)
    w0 = model.state_dict()
    mask = full_mask(model, include_biases=False)
    out_numel = mask["classifier.6.weight"].numel()  # 16
    for k in range(1, 4):
        mask = prune(_moved(w0, k), w0, mask, 0.5, scope, "magnitude", {"classifier.6.weight": 0.25})
        assert int(mask["classifier.6.weight"].sum()) == pytest.approx(out_numel * 0.75 ** k, abs=1)
    rest = [m for n, m in mask.items() if n != "classifier.6.weight"]
    kept = sum(int(m.sum()) for m in rest) / sum(m.numel() for m in rest)
    assert kept == pytest.approx(0.125, abs=1e-3)


def test_layer_rate_for_a_tensor_outside_the_mask_is_rejected():
    model = build_model(seed=0)
    mask = full_mask(model, include_biases=False)
    with pytest.raises(ValueError, match="classifier.6.bias"):
        prune(model.state_dict(), model.state_dict(), mask, 0.5, layer_rates={"classifier.6.bias": 0.25})


def test_config_rejects_a_tensor_both_ignored_and_rated(tmp_path):
    import yaml

    raw = yaml.safe_load(open("params.yaml"))
    raw["prune"]["ignore"] = ["classifier.6.weight"]
    raw["prune"]["layer_rates"] = {"classifier.6.weight": 0.25}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="both ignored and given a rate"):
        load_params(path)
    raw["prune"]["ignore"], raw["prune"]["layer_rates"] = [], {"classifier.6.weight": 1.0}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"prune.layer_rates"):
        load_params(path)


def test_magnitude_keeps_more_w0_magnitude_than_magnitude_increase_on_barely_moved_weights():
    """The mechanism behind the dead tickets: weights that barely move are ranked by noise under |W_k| - |W0|,
    so the mask keeps about its share of W0's magnitude; |W_k| keeps the big pretrained weights."""
    model = build_model(seed=0, dropout=0.0)
    w0 = model.state_dict()
    trained = _moved(w0, 1, scale=1e-4)
    full = full_mask(model, include_biases=False)
    kept = {c: diagnose.w0_kept(w0, prune(trained, w0, full, 0.5, "layerwise", c))
            for c in ("magnitude", "magnitude_increase")}
    for layer in ("features.0", "features.10"):
        assert kept["magnitude"][layer] > 0.7
        assert kept["magnitude_increase"][layer] < 0.6


def test_dead_units_and_cause_of_a_network_whose_head_is_cut():
    model = build_model(seed=0, dropout=0.0).eval()
    x = torch.randn(6, 3, 64, 64)
    units = diagnose.units_of(model)
    assert units == {"features": 256, "head1": 8, "head2": 8}
    alive = diagnose.dead_units(model, [(x, None)])
    assert alive["features"] < 256
    with torch.no_grad():
        model.classifier[1].weight.zero_()
        model.classifier[1].bias.fill_(-1.0)   # every head1 ReLU is 0 for every input
    dead = diagnose.dead_units(model, [(x[:3], None), (x[3:], None)])
    assert dead["head1"] == 8
    with torch.no_grad():
        scores = (model(x)[:, 1] - model(x)[:, 0]).numpy()
    assert diagnose.score_constant(scores)
    assert diagnose.cause(dead, units, True, True) == "dead head"
    assert diagnose.cause(alive, units, False, True) == "ranks, one class at argmax"
    assert diagnose.cause({**alive, "features": 256}, units, True, True) == "features lost"
    assert diagnose.cause(alive, units, True, True) == "output cut"
    assert not diagnose.score_constant(np.array([0.1, 0.2]))


def test_diagnose_records_why_a_cut_network_is_dead():
    """What the evaluate stage writes per round: a network with a dead head gives one score and says why."""
    model = build_model(seed=0, dropout=0.0).eval()
    w0 = {n: t.clone() for n, t in model.state_dict().items()}
    mask = full_mask(model, include_biases=False)
    with torch.no_grad():
        model.classifier[4].weight.zero_()
        model.classifier[4].bias.fill_(-1.0)  # every head2 ReLU is 0
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    scores, argmax = (logits[:, 1] - logits[:, 0]).numpy(), logits.argmax(1).numpy()
    assert diagnose.applies(model) and not diagnose.applies(torch.nn.Linear(2, 2))
    d = diagnose.diagnose(model, [(x, None)], scores, argmax, mask, w0)
    assert d["score_constant"] and d["cause"] == "dead head" and d["dead"]["head2"] == 8
    assert d["w0_kept"]["features.0"] == 1.0 and set(d["w0_kept"]) == {n.removesuffix(".weight") for n in mask}
