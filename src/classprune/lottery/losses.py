"""The class-dependent loss L = L_wCE + lambda * L_SHR (paper eq. 1-3)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.network import positive_score

GammaSpec = float | int | Sequence[float] | Mapping[str, float]


def effective_number_gamma(beta: float, counts: Sequence[int]) -> list[float]:
    """Class-balanced weights (1-beta)/(1-beta^n_c), normalised to sum to the number of classes (Cui et al.)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if any(n <= 0 for n in counts):
        raise ValueError(f"every class needs at least one training sample, got counts {list(counts)}")
    n = torch.tensor(counts, dtype=torch.float64)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    w = w / w.sum() * len(counts)
    return w.tolist()


def resolve_gamma(spec: GammaSpec, counts: Sequence[int]) -> list[float]:
    """A number weights the positive class (negatives 1, as in the paper); a list gives every class;
    ``{beta: b}`` derives the weights from the class counts by the effective number."""
    if isinstance(spec, Mapping):
        return effective_number_gamma(float(spec["beta"]), counts)
    if isinstance(spec, (int, float)):
        return [1.0] * (len(counts) - 1) + [float(spec)]
    gamma = [float(g) for g in spec]
    if len(gamma) != len(counts):
        raise ValueError(f"gamma has {len(gamma)} entries for {len(counts)} classes")
    return gamma


def squared_hinge_ranking(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """mean over positive-negative pairs of max(0, margin - (s_pos - s_neg))^2; 0 for a one-class batch.

    A smooth surrogate of 1 - AUC (Steck 2007): it is zero only when every positive outranks every
    negative by the margin.
    """
    pos, neg = scores[targets == 1], scores[targets == 0]
    if pos.numel() == 0 or neg.numel() == 0:
        return scores.sum() * 0.0  # keeps the graph, never NaN
    return (margin - (pos[:, None] - neg[None, :])).clamp_min(0.0).pow(2).mean()


class ClassDependentLoss(nn.Module):
    """Weighted cross-entropy plus lambda times the ranking loss on the positive-class log-odds."""

    def __init__(self, gamma: Sequence[float], lam: float = 0.0, margin: float = 1.0):
        super().__init__()
        if lam < 0 or any(g < 0 for g in gamma):
            raise ValueError("gamma and lambda must be non-negative")
        self.register_buffer("gamma", torch.tensor(list(gamma), dtype=torch.float32))
        self.lam, self.margin = float(lam), float(margin)

    def parts(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted cross-entropy and the ranking loss apart, for whoever logs them (tensors: no host sync)."""
        # Mean of gamma-weighted per-sample losses (not weight-normalised): gamma scales the positives'
        # pull even in a batch that holds one class only.
        wce = (F.cross_entropy(logits, targets, reduction="none") * self.gamma[targets]).mean()
        shr = (squared_hinge_ranking(positive_score(logits), targets, self.margin) if self.lam > 0
               else torch.zeros((), device=logits.device))
        return {"wce": wce, "shr": shr}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = self.parts(logits, targets)
        return p["wce"] + self.lam * p["shr"] if self.lam > 0 else p["wce"]
