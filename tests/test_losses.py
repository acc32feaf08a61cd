import math

import pytest
import torch

from classprune.lottery.losses import ClassDependentLoss, effective_number_gamma, resolve_gamma, squared_hinge_ranking


def test_ranking_loss_has_gradient_when_a_positive_is_ranked_below_a_negative():
    scores = torch.tensor([0.2, 1.5, -1.0, 0.1], requires_grad=True)
    targets = torch.tensor([1, 0, 0, 1])
    loss = squared_hinge_ranking(scores, targets, margin=1.0)
    loss.backward()
    assert loss.item() > 0
    assert scores.grad[0] < 0 and scores.grad[1] > 0  # push the positive up, the negative down
    assert scores.grad.abs().sum() > 0


def test_ranking_loss_is_zero_when_positives_outrank_negatives_by_the_margin():
    scores = torch.tensor([3.0, 2.1, 1.0, 0.0], requires_grad=True)
    targets = torch.tensor([1, 1, 0, 0])
    loss = squared_hinge_ranking(scores, targets, margin=1.0)
    assert loss.item() == 0.0


def test_ranking_loss_matches_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(10, generator=g), torch.tensor([1, 0] * 5)
    ref = sum(max(0.0, 1 - (s[i] - s[j]).item()) ** 2 for i in range(10) for j in range(10) if t[i] == 1 and t[j] == 0) / 25
    assert squared_hinge_ranking(s, t).item() == pytest.approx(ref, rel=1e-6)


def test_single_class_batch_contributes_zero_without_nan():
    logits = torch.randn(6, 2, requires_grad=True)
    fn, targets = ClassDependentLoss([1.0, 5.0], lam=5.0), torch.zeros(6, dtype=torch.long)
    loss = fn(logits, targets)
    loss.backward()
    assert fn.parts(logits, targets)["shr"].item() == 0.0 and math.isfinite(loss.item())
    assert torch.isfinite(logits.grad).all()


def test_total_loss_carries_ranking_gradient():
    logits = torch.tensor([[0.0, -1.0], [0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([1, 0])  # the positive is ranked below the negative
    with_rank = ClassDependentLoss([1.0, 1.0], lam=5.0)(logits, targets)
    without = ClassDependentLoss([1.0, 1.0], lam=0.0)(logits, targets)
    g1 = torch.autograd.grad(with_rank, logits)[0]
    g0 = torch.autograd.grad(without, logits)[0]
    assert with_rank.item() > without.item()
    assert not torch.allclose(g1, g0)


def test_gamma_from_beta_matches_closed_form():
    beta, counts = 0.999, [2100, 420]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [w / sum(raw) * 2 for w in raw]
    assert effective_number_gamma(beta, counts) == pytest.approx(expected, rel=1e-12)
    assert effective_number_gamma(beta, counts)[1] > effective_number_gamma(beta, counts)[0]


def test_gamma_with_beta_to_zero_is_uniform():
    assert effective_number_gamma(0.0, [14000, 2800]) == pytest.approx([1.0, 1.0])
    assert effective_number_gamma(1e-9, [14000, 2800]) == pytest.approx([1.0, 1.0], rel=1e-6)


def test_gamma_spec_forms_and_bad_values():
    assert resolve_gamma(5, [10, 2]) == [1.0, 5.0]
    assert resolve_gamma([2, 3], [10, 2]) == [2.0, 3.0]
    assert resolve_gamma({"beta": 0.0}, [10, 2]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        effective_number_gamma(1.0, [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        effective_number_gamma(0.5, [10, 0])
    with pytest.raises(ValueError):
        ClassDependentLoss([1.0, 1.0], lam=-1)


def test_weighted_ce_scales_positive_loss():
    logits, t = torch.zeros(2, 2), torch.tensor([1, 1])
    l1 = ClassDependentLoss([1.0, 1.0])(logits, t)
    l5 = ClassDependentLoss([1.0, 5.0])(logits, t)
    assert l5.item() == pytest.approx(5 * l1.item())
