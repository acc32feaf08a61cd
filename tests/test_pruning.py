import numpy as np
import pytest
import torch

from classprune.lottery.losses import ClassDependentLoss
from classprune.lottery.masks import apply_mask, full_mask, keep_bits, load_mask, remaining, save_mask, sparsity_report, zero_pruned
from classprune.models.network import build_model
from classprune.lottery.pruning import CRITERIA, keep_top, prune, rewind
from classprune.lottery.train import TrainingDiverged, first_nonfinite, lr_factor, masked_step, train_masked


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
    """Holds on every CPU kind: a round either trains with pruned weights exactly 0, or stops diverged."""
    torch.manual_seed(0)
    model = build_model(seed=0)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    mask = full_mask(model)
    loss = ClassDependentLoss([1.0, 5.0], lam=5.0)
    for k in range(1, 4):
        model.load_state_dict(rewind(w0, mask))
        try:
            train_masked(model, mask, tiny_loader, loss, iterations=4, lr=0.05, grad_clip=1.0, desc=f"round {k}")
        except TrainingDiverged as exc:  # a trajectory some kernels take: the round is refused, not corrupted
            assert str(exc).startswith(f"round {k}: training diverged") and "\n" not in str(exc)
        trained = {n: t.clone() for n, t in model.state_dict().items()}
        for n, m in mask.items():
            assert torch.equal(trained[n][~m], torch.zeros_like(trained[n][~m])), f"pruned weight not 0 in {n} (round {k})"
        trained = {n: torch.nan_to_num(t) for n, t in trained.items()}
        new_mask = prune(trained, w0, mask, 0.5)
        for n in mask:
            assert not torch.any(new_mask[n] & ~mask[n]), "masks must only shrink"
        rewound = rewind(w0, new_mask)
        for n, m in new_mask.items():
            assert torch.equal(rewound[n][m], w0[n][m])  # bit for bit
            assert torch.all(rewound[n][~m] == 0.0)
        mask = new_mask


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_values_at_pruned_positions_become_exact_zero(bad):
    model = build_model(seed=0)
    mask = keep_top({n: torch.rand(m.shape) for n, m in full_mask(model).items()}, full_mask(model), 0.5)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, m in mask.items():
            params[n][~m] = bad
    apply_mask(model, mask)
    for n, m in mask.items():
        assert torch.equal(params[n][~m], torch.zeros_like(params[n][~m])), n
        assert torch.isfinite(params[n][m]).all(), n  # kept weights untouched
    # the training hot path (bitwise) and rewind agree: +0.0 exactly, sign bit clear
    t = {"w": torch.tensor([bad, 1.5, bad, -2.0])}
    keep = {"w": torch.tensor([False, True, False, True])}
    zero_pruned(t, keep_bits(keep, t))
    assert t["w"].tolist() == [0.0, 1.5, 0.0, -2.0] and not torch.signbit(t["w"][0])
    assert rewind({"w": torch.tensor([bad, 3.0])}, {"w": torch.tensor([False, True])})["w"].tolist() == [0.0, 3.0]


def test_nonfinite_gradients_at_pruned_positions_do_not_reach_the_weights(tiny_loader):
    model = build_model(seed=0)
    mask = keep_top({n: torch.rand(m.shape) for n, m in full_mask(model).items()}, full_mask(model), 0.5)
    apply_mask(model, mask)
    params = dict(model.named_parameters())
    bits = keep_bits(mask, params)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = next(iter(tiny_loader))
    for _ in range(2):  # twice: the momentum buffer must not carry a NaN either
        opt.zero_grad()
        ClassDependentLoss([1.0, 5.0], 5.0)(model(x), y).backward()
        with torch.no_grad():
            for n, m in mask.items():
                params[n].grad[~m] = float("nan")
        masked_step(model, opt, bits, grad_clip=0.0)
    for n, m in mask.items():
        assert torch.equal(params[n][~m], torch.zeros_like(params[n][~m])), n
    assert first_nonfinite(model) is None


def test_diverging_training_stops_with_one_line_naming_round_and_tensor(tiny_loader):
    model = build_model(seed=0)
    with torch.no_grad():  # a kept weight that has already blown up, as a diverged step leaves it
        dict(model.named_parameters())["classifier.4.weight"][0, 0] = float("inf")
    with pytest.raises(TrainingDiverged) as err:
        train_masked(model, full_mask(model), tiny_loader, ClassDependentLoss([1.0, 5.0], 5.0), iterations=3,
                     lr=0.01, desc="black round 3")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("black round 3: training diverged at step 1")
    assert "classifier.4.weight" in msg and "train.lr" in msg and "train.grad_clip" in msg


def test_weights_going_nonfinite_are_caught_even_when_the_loss_is_finite(tiny_loader):
    """An absurd lr overflows the weights; the check after the last step names a tensor."""
    model = build_model(seed=0)
    with pytest.raises(TrainingDiverged, match=r"round 1: training diverged at step \d+ of 2 \(.*(weight tensor|loss)"):
        train_masked(model, full_mask(model), tiny_loader, ClassDependentLoss([1.0, 1.0]), iterations=2,
                     lr=1e38, desc="round 1")


def test_momentum_cannot_revive_pruned_weights(tiny_loader):
    model = build_model(seed=1)
    mask = full_mask(model)
    # prune half of every tensor mid-way through an optimizer's life: momentum buffers are non-zero
    train_masked(model, mask, tiny_loader, ClassDependentLoss([1.0, 1.0]), iterations=2, lr=0.05, grad_clip=1.0)
    mask = keep_top({n: torch.rand(m.shape) for n, m in mask.items()}, mask, 0.5)
    train_masked(model, mask, tiny_loader, ClassDependentLoss([1.0, 1.0]), iterations=3, lr=0.05, grad_clip=1.0,
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
        train_masked(model, full_mask(model), loader, ClassDependentLoss([1.0, 5.0], 5.0), 3, lr=0.05, grad_clip=1.0)
        return model.state_dict()
    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Linear(torch.nn.Module):
    """loss = w: the gradient is exactly 1, so plain SGD moves w by exactly -lr of that step."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return self.w


@pytest.mark.parametrize("schedule,warmup", [("constant", 0), ("constant", 3), ("cosine", 0), ("cosine", 4)])
def test_each_step_uses_the_scheduled_learning_rate(schedule, warmup):
    model, steps, seen = _Linear(), 12, []
    batches = [(torch.zeros(1), torch.zeros(1))]
    train_masked(model, full_mask(model), batches, lambda out, y: out, steps, lr=0.1, momentum=0.0,
                 schedule=schedule, warmup=warmup, on_step=lambda step, m: seen.append(float(m.w.detach())))
    used = -np.diff([0.0] + seen)
    expected = [0.1 * lr_factor(s, steps, schedule, warmup) for s in range(steps)]
    assert used == pytest.approx(expected, rel=1e-9)
    ramp = used[:warmup + 1]
    assert all(np.diff(ramp) > 0)                     # warm-up rises to the base lr
    assert used[warmup] == pytest.approx(0.1 if schedule == "constant" else 0.1 * lr_factor(warmup, steps, schedule, warmup))
    if schedule == "constant":
        assert used[warmup:] == pytest.approx([0.1] * (steps - warmup), rel=1e-12)
        assert all(lr_factor(s, steps) == 1.0 for s in range(steps))  # the default is exactly the paper's SGD
    else:
        tail = used[warmup:]
        assert all(np.diff(tail) < 0) and 0 < tail[-1] < 0.1 * 0.05  # decays to almost 0, never negative


def test_unknown_schedule_fails_before_training(tiny_loader):
    model = build_model(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="train.schedule"):
        train_masked(model, full_mask(model), tiny_loader, ClassDependentLoss([1.0, 1.0]), 2, schedule="step")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
