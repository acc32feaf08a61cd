"""Channel lottery tickets (classprune.lottery.channels): whole channels pruned, masks that only shrink, criteria as
the literature defines them, and a compact network (Torch-Pruning) that computes what the masked one does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from classprune.lottery import channel_criteria as crit
from classprune.lottery import channels as ch
from classprune.constants import CHANNEL_CRITERIA
from classprune.errors import ConfigError
from classprune.lottery.masks import apply_mask, remaining_all
from classprune.models.network import build_model, count_parameters

sys.path[:0] = [str(Path(__file__).parent)]
from _project import ROOT, build_tiny_cache  # noqa: E402

SCOPES = ("layerwise", "global")
RATE = 1 - 0.5 ** 0.5  # what prune.rate 0.5 gives: weights halve per round


def _alexnet(seed: int = 0) -> nn.Module:
    return build_model("none", seed=seed, dropout=0.0).eval()


def test_registry_and_config_agree():
    assert set(crit.CHANNEL_CRITERIA) == set(CHANNEL_CRITERIA)


def test_a_unit_is_the_filter_its_bias_and_every_slice_that_reads_it():
    units = {u.layer: u for u in ch.units(_alexnet(), "conv", 64)}
    assert list(units) == ["features.0", "features.3", "features.6", "features.8", "features.10"]
    got = {n: [(s.param, s.dim) for s in u.slices] for n, u in units.items()}
    assert got["features.0"] == [("features.0.weight", 0), ("features.0.bias", 0), ("features.3.weight", 1)]
    # through ReLU, max-pool, the 1x1 avg-pool and flatten into the head's first layer; the 8-wide head stays
    assert got["features.10"] == [("features.10.weight", 0), ("features.10.bias", 0), ("classifier.1.weight", 1)]
    for u in units.values():
        for s in u.slices:
            assert torch.equal(s.index, torch.arange(u.size)) and torch.equal(s.channel, torch.arange(u.size))


def _whole_channels(mask: dict, units: list) -> None:
    """The mask is exactly its live channels: an entry is kept iff every channel it belongs to lives."""
    live = ch.alive(mask, units)
    expected = {n: torch.ones_like(m) for n, m in mask.items()}
    for u in units:
        for s in u.slices:
            index = s.index[~live[u.layer][s.channel]]
            expected[s.param].index_fill_(s.dim, index, False)
    assert all(torch.equal(mask[n], expected[n]) for n in mask)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("criterion", CHANNEL_CRITERIA)
def test_channel_rounds_drop_whole_channels_and_masks_only_shrink(criterion, scope):
    model = _alexnet()
    units = ch.units(model, "conv", 64)
    mask = ch.full_channel_mask(model, units)
    fractions = [remaining_all(mask, count_parameters(model))]
    for _ in range(6):
        before = ch.alive(mask, units)
        new = crit.prune_channels(model, mask, units, RATE, scope, criterion, 64)
        assert all(not (new[n] & ~mask[n]).any() for n in mask), "a pruned entry came back"
        _whole_channels(new, units)
        after = ch.alive(new, units)
        assert all(int(after[n].sum()) >= 1 for n in after), "a layer lost its last channel"
        if scope == "layerwise":  # each layer keeps round((1 - p) x its live channels)
            assert {n: int(a.sum()) for n, a in after.items()} == \
                   {n: max(1, round(int(b.sum()) * (1 - RATE))) for n, b in before.items()}
        else:  # one pool over all layers: the kept total is round((1 - p) x the live total), +1 per emptied layer
            total = sum(int(b.sum()) for b in before.values())
            assert round(total * (1 - RATE)) <= sum(int(a.sum()) for a in after.values()) <= \
                   round(total * (1 - RATE)) + len(units)
        mask = new
        apply_mask(model, mask)
        fractions.append(remaining_all(mask, count_parameters(model)))
    assert fractions == sorted(fractions, reverse=True)
    if scope == "layerwise":  # a middle layer loses (1 - p)^2: the weights halve per round, 1.56 % after 6
        assert 0.0156 * 0.9 < fractions[-1] < 0.0156 * 1.3, fractions


def test_l1_keeps_the_filters_with_the_largest_l1_norm_per_layer_and_by_layer_mean_globally():
    model = _alexnet(seed=3)
    units = ch.units(model, "conv", 64)
    mask = ch.full_channel_mask(model, units)
    l1 = {u.layer: dict(model.named_parameters())[f"{u.layer}.weight"].detach().abs().flatten(1).sum(1)
          for u in units}
    kept = ch.alive(crit.prune_channels(model, mask, units, RATE, "layerwise", "l1", 64), units)
    for layer, norm in l1.items():
        n = int(kept[layer].sum())
        assert torch.equal(kept[layer], norm >= norm.topk(n).values.min()), layer
    kept = ch.alive(crit.prune_channels(model, mask, units, RATE, "global", "l1", 64), units)
    pooled = torch.cat([norm / norm.mean() for norm in l1.values()])
    threshold = pooled.topk(int(sum(int(k.sum()) for k in kept.values()))).values.min()
    assert torch.equal(torch.cat(list(kept.values())), pooled >= threshold)


def _two_conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_refill_keeps_the_channels_with_most_unstructured_survivors_where_l1_keeps_the_largest():
    net = _two_conv_net()
    with torch.no_grad():
        w = net[0].weight
        w.fill_(1e-3)
        w[0] = 0.0
        w[0, 0, 0, 0] = 100.0  # one huge weight: the largest L1 norm, a single survivor
        w[1] = 0.5             # many medium weights: most survivors of a 50 % magnitude cut
        w[2] = 0.4
    units = ch.units(net, ["0"], 16)
    mask = ch.full_channel_mask(net, units)
    by_l1 = ch.alive(crit.prune_channels(net, mask, units, 0.5, "layerwise", "l1", 16), units)["0"]
    by_refill = ch.alive(crit.prune_channels(net, mask, units, 0.5, "layerwise", "refill", 16), units)["0"]
    assert by_l1.tolist() == [True, True, False, False]
    assert by_refill.tolist() == [False, True, True, False]


@pytest.fixture(scope="module")
def channel_chain(tmp_path_factory):
    """Four rounds of a channel chain as the pipeline runs them (lottery.run_chain: the weight chain's rounds 0
    and 1, then lt_ch's run_channel_chain), in a throw-away project over a small decoded cache, then evaluated
    by the evaluate stage's code."""
    from classprune.lottery import runner as lottery
    from classprune.config import Params
    from classprune.evaluation.evaluate import evaluate_chain

    root = tmp_path_factory.mktemp("channel_chain")
    cache = build_tiny_cache(root / "data_src", n_positive=12, n_negative=38)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["pretrained"] = "none"
    raw["train"].update(iterations=12, warmup=1, batch_size=8, device="cpu", loader_workers=0)
    raw["prune"]["rounds"] = [{"k": k, "prev": k - 1} for k in range(1, 5)]
    raw["run"].update(seeds=[0], scenarios=["black"], channel_scenarios=["black"])
    raw["baselines"]["methods"], raw["evaluate"]["batch_size"] = [], 16
    params = Params.model_validate(raw)
    work = root / "project"
    (work / "data").mkdir(parents=True)
    (work / "data" / "cache").symlink_to(cache)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        lottery.run_chain(params, "black", 0, "channel")
        result = evaluate_chain(params, "black", 0, "channel")
    finally:
        os.chdir(cwd)
    return params, work, result


def test_compact_network_computes_the_masked_networks_logits_on_the_test_images(channel_chain):
    from classprune import io
    from classprune.lottery import runner as lottery
    from classprune.lottery.masks import load_mask

    params, work, _ = channel_chain
    cwd = os.getcwd()
    os.chdir(work)
    try:  # the test split as the evaluate stage reads it (cache, normalisation)
        images = torch.cat([x for x, _ in lottery.train_loader(params, "test", train=False)])
    finally:
        os.chdir(cwd)
    dense_macs = ch.macs_and_params(lottery.build(params, 0).eval(), 64)[0]
    for k in range(1, 5):
        d = work / "models" / "black-channel" / "seed_0" / f"round_{k}"
        state, mask = io.load_torch(d / "weights.pt"), load_mask(d / "mask.pt")
        assert all(not state[n][~m].any() for n, m in mask.items()), "a pruned entry is not exactly zero"
        model = lottery.build(params, 0, state).eval()
        units = lottery.channel_units(params, model)
        small = ch.compact(model, mask, units, 64)
        with torch.no_grad():
            full, compact_out = model(images), small(images)
        assert (full - compact_out).abs().max().item() <= 1e-5, k
        live = ch.alive(mask, units)
        assert [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)] == \
               [int(live[u.layer].sum()) for u in units]
        if k > 1:
            assert ch.macs_and_params(small, 64)[0] < dense_macs


def test_the_channel_tickets_dense_round_is_the_weight_chains_and_training_it_again_gives_the_same_bytes(
        channel_chain, tmp_path):
    """lt_ch copies rounds 0 and 1 from the weight chain instead of training round 1 again: that is only right
    if the compact network's dense round, trained from the channel ticket's round 0, is the weight round."""
    import shutil

    from classprune import io
    from classprune.lottery import runner as lottery
    from classprune.lottery.masks import load_mask

    params, work, _ = channel_chain
    weight, ticket = work / "models" / "black" / "seed_0", work / "models" / "black-channel" / "seed_0"
    for k in (0, 1):
        for name in ("weights.pt", "rewound.pt"):
            assert (ticket / f"round_{k}" / name).read_bytes() == (weight / f"round_{k}" / name).read_bytes()
        mask = load_mask(ticket / f"round_{k}" / "mask.pt")
        units = lottery.channel_units(params, lottery.build(params, 0, io.load_torch(weight / "round_0" / "weights.pt")))
        assert set(mask) == set(ch.full_channel_mask(lottery.build(params, 0), units)) and all(m.all() for m in mask.values())
    again = tmp_path / "again"
    shutil.copytree(work, again, symlinks=True, ignore=shutil.ignore_patterns("round_[1-9]*", "reports"))
    cwd = os.getcwd()
    os.chdir(again)
    try:
        lottery.train_round(params, "black", 0, 1, "channel")  # the dense round trained as a channel round
    finally:
        os.chdir(cwd)
    assert (again / "models" / "black-channel" / "seed_0" / "round_1" / "weights.pt").read_bytes() == \
        (weight / "round_1" / "weights.pt").read_bytes()


def test_evaluation_reports_the_compact_networks_macs_and_parameters(channel_chain):
    import json

    _, work, _ = channel_chain
    rounds = json.loads((work / "reports" / "rounds" / "seed_0" / "black-channel.json").read_text())["rounds"]
    macs = [r["macs"] for r in rounds]
    assert all(r["granularity"] == "channel" for r in rounds)
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0] / 4, macs
    assert [r["params"] for r in rounds] == sorted((r["params"] for r in rounds), reverse=True)
    # the compact network holds exactly the masked one's live weights (trained weights are never exactly 0)
    assert all(abs(r["params"] - r["nonzero"]) <= 1e-3 * r["params"] for r in rounds), rounds


def test_reinit_control_trains_the_tickets_compact_architecture_from_a_fresh_init(channel_chain):
    """Liu et al.'s control: per level the same channels as the ticket, none of W0's weights, trained and
    evaluated like the ticket (same remaining share, val and test metrics)."""
    import json

    from classprune import io
    from classprune.lottery import runner as lottery
    from classprune.lottery.masks import load_mask
    from classprune.lottery.reinit import fresh_compact, reinit_channel

    params, work, _ = channel_chain
    cwd = os.getcwd()
    os.chdir(work)
    try:
        reinit_channel(params, "black", 0)
    finally:
        os.chdir(cwd)
    rounds = work / "reports" / "rounds" / "seed_0"
    ticket = json.loads((rounds / "black-channel.json").read_text())["rounds"]
    control = json.loads((rounds / "black-channel-reinit.json").read_text())
    pruned = [r for r in ticket if r["round"] > 1]  # the dense round has no pruned architecture to control for
    assert control["kind"] == "reinit" and [r["round"] for r in control["rounds"]] == [r["round"] for r in pruned]
    assert [r["remaining"] for r in control["rounds"]] == [r["remaining"] for r in pruned]
    assert all(0 <= r[s]["auc"] <= 1 for r in control["rounds"] for s in ("val", "test"))
    d = work / "models" / "black-channel" / "seed_0"
    mask, w0 = load_mask(d / "round_4" / "mask.pt"), io.load_torch(d / "round_0" / "weights.pt")
    small, grow = fresh_compact(params, 0, mask)
    ticket_small = ch.compact(lottery.build(params, 0, io.load_torch(d / "round_4" / "weights.pt")), mask,
                              lottery.channel_units(params, lottery.build(params, 0, w0)), 64)
    shapes = {n: t.shape for n, t in small.state_dict().items()}
    assert shapes == {n: t.shape for n, t in ticket_small.state_dict().items()}
    full = grow(small.state_dict())
    conv = [n for n in full if n.startswith("features") and n.endswith("weight")]
    assert all(not torch.equal(full[n][mask[n]], w0[n][mask[n]]) for n in conv), "reinit kept W0's weights"
    assert all(not full[n][~mask[n]].any() for n in mask)
    again, _ = fresh_compact(params, 0, mask)  # seeded: a rerun is the same control
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), again.state_dict().values()))


# --- bad input: one line naming the key or the layer, nothing written --------------------------------------

def _params_file(tmp_path: Path, run: dict | None = None, **prune) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["pretrained"] = "none"
    raw["prune"].update(prune)
    raw["run"].update(run or {})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("prune", "needle"), [
    ({"channel": {"criterion": "taylor"}}, "prune.channel.criterion"),
    ({"channel": {"layers": []}}, "prune.channel.layers"),
    ({"channel": {"rate": 1.5}}, "prune.channel.rate"),
    ({"run": {"channel_scenarios": ["purple"]}}, "run.channel_scenarios"),
    ({"run": {"channel_scenarios": ["black", "black"]}}, "run.channel_scenarios"),
    ({"run": {"scenarios": ["red"], "channel_scenarios": ["black"]}}, "run.channel_scenarios"),
])
def test_invalid_channel_params_are_one_line_naming_the_key(tmp_path, prune, needle):
    from classprune.config import load_params

    with pytest.raises(ConfigError) as err:
        load_params(_params_file(tmp_path, **prune))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_layer_list_naming_no_conv_layer_is_refused_by_the_chain_stage_and_nothing_is_written(tmp_path):
    _params_file(tmp_path, {"channel_scenarios": ["red"]}, channel={"layers": ["features.3", "classifier.1"]})
    init = subprocess.run([sys.executable, str(ROOT / "stages" / "init.py"), "--scenario", "red", "--seed", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-2000:]  # the weight chain's W0, which the channel ticket starts from
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "lt_ch.py"), "--scenario", "red", "--seed", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "classifier.1" in lines[0] and "not a Conv2d" in lines[0], lines[0]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["red"]


def test_the_channel_chain_stage_without_its_weight_chains_dense_round_is_one_line_and_writes_nothing(tmp_path):
    _params_file(tmp_path, {"channel_scenarios": ["red"]})
    init = subprocess.run([sys.executable, str(ROOT / "stages" / "init.py"), "--scenario", "red", "--seed", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-2000:]
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "lt_ch.py"), "--scenario", "red", "--seed", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "models/red/seed_0/round_1/weights.pt not found" in lines[0], lines[0]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["red"]


def test_a_network_the_dependency_graph_cannot_trace_is_a_one_line_error():
    class NeedsOneChannel(nn.Module):  # its forward fails on the traced RGB input
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    with pytest.raises(ConfigError) as err:
        ch.units(NeedsOneChannel(), "conv", 16)
    assert "cannot trace NeedsOneChannel" in str(err.value) and "\n" not in str(err.value)


def test_training_the_compact_network_is_training_the_masked_one(tiny_loader):
    """A channel round may train the physically small network: in float64 its weights, grown back to full
    shape, equal masked training's (gradients of removed channels are zero either way)."""
    from classprune.lottery.losses import ClassDependentLoss
    from classprune.lottery.train import train_masked

    model = _alexnet(seed=1).double()
    units = ch.units(model, "conv", 64)
    mask = ch.full_channel_mask(model, units)
    for _ in range(2):
        mask = crit.prune_channels(model, mask, units, RATE, "layerwise", "l1", 64)
        apply_mask(model, mask)
    like = {n: t.clone() for n, t in model.state_dict().items()}
    small = ch.compact(model, mask, units, 64)
    assert sum(p.numel() for p in small.parameters()) < 0.3 * count_parameters(model)
    loader = [(x.double(), y) for x, y in tiny_loader]
    kw = {"lr": 0.02, "momentum": 0.9, "grad_clip": 2.0}
    loss = ClassDependentLoss([1.0, 5.0], 5.0, 1.0).double()
    train_masked(model, mask, loader, loss, 6, **kw)
    train_masked(small, {}, loader, loss, 6, **kw)
    grown = ch.expand(small.state_dict(), ch.live_index(mask, units), like)
    assert grown.keys() == model.state_dict().keys()
    for name, t in model.state_dict().items():
        assert torch.allclose(grown[name], t, rtol=0, atol=1e-10), name
    assert not torch.equal(grown["features.3.weight"], like["features.3.weight"]), "training changed nothing"


def test_the_criterion_rule_counts_failed_models_first_then_val_auc():
    """experiments/channel_criteria.py's rule as fixed before looking: fewest dead + constant, then AUC."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("channel_criteria", ROOT / "experiments" / "channel_criteria.py")
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    rows = [("a", 0.99, True, True), ("a", 0.99, False, False),      # best AUC, one dead model
            ("b", 0.90, False, False), ("b", 0.90, False, False),    # alive, lower AUC
            ("c", 0.95, False, False), ("c", 0.95, False, False)]    # alive, higher AUC: chosen
    df = pd.DataFrame(rows, columns=["candidate", "val_auc", "score_constant", "constant"])
    assert list(cc.choose(df).index) == ["c", "b", "a"]
