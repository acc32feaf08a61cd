"""Baselines: SNIP scores, L-OBS saliency and update, MobileNet, and the stage's round JSONs."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from classprune import baselines as bl
from classprune.baselines.common import run_baseline
from classprune.baselines import lobs as bl_lobs
from classprune.baselines import mobilenet as bl_mobilenet
from classprune.baselines import snip as bl_snip  # noqa: F401 - registers the "snip" criterion
from classprune.errors import ClassPruneError, ConfigError
from classprune.lottery.masks import full_mask
from classprune.constants import NUM_PARAMETERS
from classprune.models.network import count_parameters
from classprune.lottery.pruning import CRITERIA, keep_top, prune


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))


def _numpy_snip(net, batches):
    """|g * w| by hand-written backprop of the mean cross-entropy, gradient averaged over the batches."""
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in net.parameters())
    grads = [np.zeros_like(t) for t in (w1, b1, w2, b2)]
    for x, y in batches:
        x = x.double().numpy()
        pre = x @ w1.T + b1
        h = np.maximum(pre, 0)
        logits = h @ w2.T + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = (p - np.eye(2)[y.numpy()]) / len(x)
        dh = (d @ w2) * (pre > 0)
        for g, v in zip(grads, (dh.T @ x, dh.sum(0), d.T @ h, d.sum(0))):
            g += v / len(batches)
    return {n: np.abs(g * w) for n, g, w in zip(("0.weight", "0.bias", "2.weight", "2.bias"), grads, (w1, b1, w2, b2))}


def test_snip_matches_numpy():
    net = _tiny_net()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(3)]
    mask = full_mask(net)
    scores = CRITERIA["snip"](None, None, list(mask), model=net, batches=batches, loss_fn=nn.CrossEntropyLoss())
    ref = _numpy_snip(net, batches)
    for n in mask:
        np.testing.assert_allclose(scores[n].double().numpy(), ref[n], rtol=1e-5, atol=1e-7)
    chosen = keep_top(scores, mask, 0.3, "global", min_keep=0)
    flat = np.concatenate([ref[n].ravel() for n in mask])
    expected = np.zeros(flat.size, dtype=bool)
    expected[np.argsort(-flat)[:round(0.3 * flat.size)]] = True
    np.testing.assert_array_equal(np.concatenate([chosen[n].numpy().ravel() for n in mask]), expected)


def test_snip_and_lobs_are_not_lottery_ticket_criteria():
    net = _tiny_net()
    state = net.state_dict()
    for name in ("snip", "lobs"):
        with pytest.raises(ConfigError, match="baseline"):
            prune(state, state, full_mask(net), 0.5, criterion=name)


def _correlated_inputs(n=400, d=12, rank=4, seed=0):
    """Strongly correlated inputs (a few latent factors plus noise), like real layer activations."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, rank, generator=g, dtype=torch.float64)
    return z @ torch.randn(rank, d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, d, generator=g,
                                                                                            dtype=torch.float64)


def test_lobs_saliency_on_diagonal_hessian():
    net = nn.Sequential(nn.Linear(5, 3, bias=False))
    diag = torch.tensor([1.0, 2.0, 4.0, 0.5, 3.0], dtype=torch.float64)
    damp = 1e-3
    scores = CRITERIA["lobs"](net.state_dict(), None, ["0.weight"], model=net, hessians={"0": torch.diag(diag)},
                              damp=damp)
    lam = damp * float(diag.mean())
    expected = net[0].weight.detach().double().square() * (diag + lam) / 2  # w^2 / (2 [H^-1]_qq)
    torch.testing.assert_close(scores["0.weight"], expected)


def _recon_error(x, w, w_new):
    return float((x @ w.T - x @ w_new.T).norm())


def test_obs_update_lowers_reconstruction_error():
    x = _correlated_inputs()
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, x.shape[1], generator=g, dtype=torch.float64)
    h = x.T @ x / len(x)
    hd = bl_lobs.damped(h, 1e-8)
    h_inv = torch.linalg.inv(hd)
    saliency = w.square() / (2 * h_inv.diagonal())
    keep = keep_top({"w": saliency}, {"w": torch.ones_like(w, dtype=torch.bool)}, 0.5)["w"]
    updated = bl_lobs.obs_update(w, keep, hd, h_inv)
    assert torch.equal(updated != 0, keep)  # pruned weights exactly zero, survivors moved
    magnitude = keep_top({"w": w.abs()}, {"w": torch.ones_like(w, dtype=torch.bool)}, 0.5)["w"]
    err_obs = _recon_error(x, w, updated)
    assert err_obs < 0.5 * _recon_error(x, w, w * magnitude)
    assert err_obs < 0.5 * _recon_error(x, w, w * keep)
    # Optimal: no perturbation of the survivors lowers the error.
    for _ in range(5):
        nudged = updated + 1e-3 * torch.randn(w.shape, generator=g, dtype=torch.float64) * keep
        assert _recon_error(x, w, nudged) >= err_obs


def test_obs_update_forms_and_blocks_agree():
    """Rows with few and with many survivors take different (equivalent) forms; blocking changes nothing."""
    x = _correlated_inputs(d=10, seed=4)
    g = torch.Generator().manual_seed(5)
    w = torch.randn(7, 10, generator=g, dtype=torch.float64)
    hd = bl_lobs.damped(x.T @ x / len(x), 1e-3)
    h_inv = torch.linalg.inv(hd)
    keep = torch.rand(7, 10, generator=g) < torch.linspace(0.05, 0.95, 7)[:, None]
    keep[0] = False  # everything pruned
    keep[1] = True  # nothing pruned
    ref = torch.zeros_like(w)
    for i in range(7):  # direct per-row reference: w_S + H_SS^-1 H_SP w_P
        s, p = keep[i], ~keep[i]
        ref[i, s] = w[i, s] + torch.linalg.solve(hd[s][:, s], hd[s][:, p] @ w[i, p])
    torch.testing.assert_close(bl_lobs.obs_update(w, keep, hd, h_inv), ref)
    torch.testing.assert_close(bl_lobs.obs_update(w, keep, hd, h_inv, block_bytes=1), ref)


def test_layer_hessian_of_conv_matches_unfolded_patches():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
    x = torch.randn(4, 2, 7, 7)
    h = bl_lobs.layer_hessians(nn.Sequential(conv), [(x, None)])["0"]
    cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18).double()
    cols = torch.cat([cols, torch.ones(len(cols), 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(h, cols.T @ cols / len(cols), rtol=1e-5, atol=1e-6)  # float32 products
    # weight.flatten(1) lines up with the unfolded patch: the layer's output is W_aug @ patch
    y = conv(x).permute(0, 2, 3, 1).reshape(-1, 3).double()
    w = bl_lobs._weight_matrix(conv, nn.Sequential(conv).state_dict(), "0")
    torch.testing.assert_close(cols @ w.T.detach(), y.detach(), rtol=1e-5, atol=1e-5)


def test_mobilenet_has_two_outputs_and_counts_against_alexnet():
    model = bl_mobilenet.build_mobilenet("mobilenet_v3_small", seed=0)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    assert count_parameters(model) / NUM_PARAMETERS == pytest.approx(1_519_906 / 2_471_842)


# --- the stage ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 60-image cache at 64 px and the red chain's W0 and dense round 1, as the DVC stages leave them."""
    from classprune.lottery import runner as lottery
    from classprune.config import Params
    from classprune.data import cache, sources, split, synthetic

    root = tmp_path_factory.mktemp("baselines")
    synthetic.generate(root / "raw", n_positive=12, n_negative=48, image_size=64, seed=0)
    manifest = split.imbalanced_split(sources.index_crack(root / "raw"), n_negative=48, n_positive=12, seed=0)
    cache.build_cache(manifest, root / "data" / "cache", 64)
    params = Params.model_validate({
        "data": {"augment": "none"},
        "model": {"pretrained": "none"},  # no pretrain stage here: a plain seeded W0
        "train": {"iterations": 2, "warmup": 0, "batch_size": 8, "loader_workers": 0},
        "evaluate": {"batch_size": 64},
        # 2 levels: 100 % and 5 % (a sparse level keeps the L-OBS solves small)
        "prune": {"rate": 0.95, "rounds": [{"k": 1, "prev": 0}, {"k": 2, "prev": 1}]},
        "run": {"scenarios": ["red"], "seeds": [0]},
        "baselines": {"snip": {"batches": 1}, "snip_trained": {"batches": 1}, "lobs": {"batches": 2}},
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        lottery.init(params, "red", 0)
        lottery.train_round(params, "red", 0, 1)
    return root, params


@pytest.mark.parametrize("method,rounds", [("snip", [1, 2]), ("snip_trained", [1, 2]), ("lobs", [1, 2]),
                                           ("mobilenet", [1])])
def test_stage_writes_round_jsons(tiny_run, monkeypatch, method, rounds):
    from classprune.reporting.report import load_results

    root, params = tiny_run
    monkeypatch.chdir(root)
    summary = run_baseline(params, method, 0)
    written = json.loads((root / "reports" / "rounds" / "seed_0" / f"{method}.json").read_text())
    assert written["method"] == method and written["kind"] == "baseline" and written["seed"] == 0
    results = written["rounds"]
    assert [r["round"] for r in results] == rounds
    assert [lv["round"] for lv in summary["levels"]] == rounds
    if method == "mobilenet":
        assert results[0]["remaining"] == pytest.approx(results[0]["parameters"] / NUM_PARAMETERS)
    else:
        assert [r["remaining"] for r in results] == pytest.approx([1.0, 0.05], abs=1e-3)
        assert results[1]["nonzero"] < 0.1 * NUM_PARAMETERS
    df = load_results(params.model_copy(update={"run": params.run.model_copy(update={"scenarios": []}),
                                                "baselines": params.baselines.model_copy(update={"methods": [method]})}))
    assert set(df["method"]) == {method}


def test_stage_rejects_unknown_method_and_seed(tiny_run, monkeypatch):
    root, params = tiny_run
    monkeypatch.chdir(root)
    with pytest.raises(ClassPruneError, match="unknown baseline"):
        run_baseline(params, "obd", 0)
    with pytest.raises(ClassPruneError, match="not in run.seeds"):
        run_baseline(params, "snip", 7)


def test_config_checks_baselines():
    from classprune.config import Params

    base = {"prune": {"rounds": [{"k": 1, "prev": 0}]}}
    assert Params.model_validate(base).baselines.methods == ["snip", "snip_trained", "lobs", "mobilenet"]
    with pytest.raises(ValueError, match="unknown or repeated"):
        Params.model_validate({**base, "baselines": {"methods": ["snip", "obd"]}})
    with pytest.raises(ValueError, match="source_scenario"):
        Params.model_validate({**base, "run": {"scenarios": ["black"]}})
    with pytest.raises(ValueError, match="mobilenet.lam"):
        Params.model_validate({**base, "baselines": {"mobilenet": {"lam": -1}}})
    assert Params.model_validate({**base, "run": {"scenarios": ["black"]}, "baselines": {"methods": []}})
