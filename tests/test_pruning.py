import numpy as np
import pytest
import torch

from classprune.losses import ClassDependentLoss
from classprune.masks import full_mask, load_mask, remaining, save_mask, sparsity_report
from classprune.model import build_model
from classprune.pruning import CRITERIA, keep_top, prune, rewind
from classprune.train import train_masked


def _trained_like(state, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in state.items()}


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_remaining_fraction_is_one_minus_p_to_the_k(scope):
    model = build_model(seed=0)
    w0 = model.state_dict()
    mask = full_mask(model)
    p = 0.5
    for k in range(1, 6):
        mask = prune(_trained_like(w0, k), w0, mask, p, scope)
        for name, m in mask.items():
            if scope == "layerwise":
                assert abs(int(m.sum()) - m.numel() * (1 - p) ** k) <= 1, name
        total = sum(m.numel() for m in mask.values())
        assert abs(sum(int(m.sum()) for m in mask.values()) - total * (1 - p) ** k) <= len(mask)
    assert remaining(mask) == pytest.approx(0.5 ** 5, abs=1e-4)


def test_global_scope_uses_one_threshold():
    w0 = {"a": torch.zeros(100), "b": torch.zeros(100)}
    trained = {"a": torch.linspace(1, 2, 100), "b": torch.linspace(0, 0.5, 100)}
    mask = {n: torch.ones(100, dtype=torch.bool) for n in w0}
    new = prune(trained, w0, mask, 0.5, "global")
    assert int(new["a"].sum()) == 100
    # b lost every weight to the global threshold; min_keep restores its best one
    assert int(new["b"].sum()) == 1 and bool(new["b"][-1])


def test_magnitude_increase_matches_numpy_reference():
    g = torch.Generator().manual_seed(0)
    w0, wk = torch.randn(40, 30, generator=g), torch.randn(40, 30, generator=g)
    mask = torch.rand(40, 30, generator=g) > 0.3
    new = prune({"w": wk}, {"w": w0}, {"w": mask}, 0.5, "layerwise", "magnitude_increase")["w"]
    # numpy reference: among survivors, drop the round(p * n) smallest |wk| - |w0|
    score = np.abs(wk.numpy()) - np.abs(w0.numpy())
    alive = np.flatnonzero(mask.numpy())
    n_keep = round(len(alive) * 0.5)
    keep = alive[np.argsort(score.ravel()[alive])[-n_keep:]]
    ref = np.zeros(mask.numel(), dtype=bool)
    ref[keep] = True
    assert np.array_equal(new.numpy().ravel(), ref)


def test_magnitude_criterion_registered_and_unknown_rejected():
    assert {"magnitude", "magnitude_increase"} <= set(CRITERIA)
    with pytest.raises(ValueError, match="allowed"):
        prune({"w": torch.ones(4)}, {"w": torch.ones(4)}, {"w": torch.ones(4, dtype=torch.bool)}, 0.5,
              criterion="nope")
    with pytest.raises(ValueError):
        keep_top({"w": torch.ones(4)}, {"w": torch.ones(4, dtype=torch.bool)}, 0.5, scope="nope")


def test_training_keeps_pruned_weights_zero_and_rewind_restores_w0(tiny_loader):
    torch.manual_seed(0)
    model = build_model(seed=0)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    mask = full_mask(model)
    loss = ClassDependentLoss([1.0, 5.0], lam=5.0)
    for k in range(1, 4):
        model.load_state_dict(rewind(w0, mask))
        train_masked(model, mask, tiny_loader, loss, iterations=4, lr=0.05)
        trained = {n: t.clone() for n, t in model.state_dict().items()}
        for n, m in mask.items():
            assert torch.all(trained[n][~m] == 0.0), f"pruned weight revived in {n} (round {k})"
        new_mask = prune(trained, w0, mask, 0.5)
        for n in mask:
            assert not torch.any(new_mask[n] & ~mask[n]), "masks must only shrink"
        rewound = rewind(w0, new_mask)
        for n, m in new_mask.items():
            assert torch.equal(rewound[n][m], w0[n][m])  # bit for bit
            assert torch.all(rewound[n][~m] == 0.0)
        mask = new_mask


def test_momentum_cannot_revive_pruned_weights(tiny_loader):
    model = build_model(seed=1)
    mask = full_mask(model)
    # prune half of every tensor mid-way through an optimizer's life: momentum buffers are non-zero
    train_masked(model, mask, tiny_loader, ClassDependentLoss([1.0, 1.0]), iterations=2, lr=0.05)
    mask = keep_top({n: torch.rand(m.shape) for n, m in mask.items()}, mask, 0.5)
    train_masked(model, mask, tiny_loader, ClassDependentLoss([1.0, 1.0]), iterations=3, lr=0.05,
                 weight_decay=1e-3)
    params = dict(model.named_parameters())
    assert all(torch.all(params[n][~m] == 0) for n, m in mask.items())


def test_mask_roundtrip_weights_only_and_sparsity_report(tmp_path):
    model = build_model()
    mask = keep_top({n: torch.rand(m.shape) for n, m in full_mask(model).items()}, full_mask(model), 0.25)
    save_mask(mask, tmp_path / "mask.pt")
    loaded = torch.load(tmp_path / "mask.pt", weights_only=True)
    assert all(torch.equal(loaded[n], mask[n]) for n in mask)
    assert load_mask(tmp_path / "mask.pt").keys() == mask.keys()
    report = sparsity_report(mask)
    total = report[report["tensor"] == "total"].iloc[0]
    assert total["size"] == 2_471_842
    assert total["fraction"] == pytest.approx(0.25, abs=1e-4)
    assert len(report) == len(mask) + 1


def test_same_seed_gives_bit_identical_weights(tiny_loader):
    def run():
        torch.manual_seed(0)
        model = build_model(seed=0)
        loader = torch.utils.data.DataLoader(tiny_loader.dataset, batch_size=12, shuffle=True,
                                             generator=torch.Generator().manual_seed(1))
        train_masked(model, full_mask(model), loader, ClassDependentLoss([1.0, 5.0], 5.0), 3, lr=0.05)
        return model.state_dict()
    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)
