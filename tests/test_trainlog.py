"""Training curves with DVCLive: every step logged, nothing about the training changed, one table per chain."""
import json

import pandas as pd
import pytest
import torch

from classprune.lottery import trainlog
from classprune.lottery.losses import ClassDependentLoss
from classprune.lottery.masks import full_mask
from classprune.models.network import build_model
from classprune.lottery.pruning import keep_top
from classprune.lottery.train import lr_factor, train_masked

STEPS = 6


def _train(log=None, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("none", seed=seed, dropout=0.0)
    mask = keep_top({n: p.detach().abs() for n, p in model.named_parameters()}, full_mask(model), 0.25)
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(8, 3, 64, 64, generator=g), torch.tensor([0, 1] * 4)) for _ in range(3)]
    losses = train_masked(model, mask, batches, ClassDependentLoss([1.0, 5.0], lam=5.0), STEPS, lr=0.02,
                          momentum=0.9, grad_clip=2.0, schedule="cosine", warmup=2, log=log)
    return model.state_dict(), losses


def test_logging_changes_no_weight_and_records_every_step(tmp_path):
    plain, plain_losses = _train()
    with trainlog.TrainLog(tmp_path / "run") as log:
        logged, logged_losses = _train(log)
    assert all(torch.equal(plain[n], logged[n]) for n in plain)  # bit for bit: the curves are read, not made
    assert logged_losses == plain_losses
    table = trainlog.read(tmp_path / "run")
    assert list(table["step"]) == list(range(STEPS))
    assert table["loss"].tolist() == pytest.approx(plain_losses)
    # the lr of each step is the schedule's, the parts add up to the loss (lambda 5)
    assert table["lr"].tolist() == pytest.approx([0.02 * lr_factor(s, STEPS, "cosine", 2) for s in range(STEPS)])
    assert (table["wce"] + 5.0 * table["rank"]).tolist() == pytest.approx(plain_losses, rel=1e-5)
    assert (table["grad_norm"] > 0).all()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == STEPS - 1


def test_gather_makes_one_table_per_chain_with_a_round_column(tmp_path):
    for k in (1, 2):
        with trainlog.TrainLog(tmp_path / f"round_{k}") as log:
            for step in range(3):
                log({"loss": k + step / 10, "lr": 0.1})  # a run without loss parts (pretraining)
    out = tmp_path / "reports" / "chain.csv"
    df = trainlog.gather({k: tmp_path / f"round_{k}" for k in (1, 2)}, out)
    again = pd.read_csv(out)
    assert list(again.columns) == ["round", "step", *trainlog.CURVES]
    assert again["round"].tolist() == [1, 1, 1, 2, 2, 2] and again["step"].tolist() == [0, 1, 2] * 2
    assert again["wce"].isna().all() and again["loss"].tolist() == pytest.approx(df["loss"].tolist())


def test_a_baseline_logs_only_inside_collecting(tmp_path):
    assert trainlog.level(1) is None  # outside a baseline stage: nothing is written anywhere
    out = tmp_path / "b.csv"
    with trainlog.collecting(out):
        with trainlog.level(3) as log:
            log({"loss": 1.0, "lr": 0.5})
    assert pd.read_csv(out)[["round", "step", "loss"]].values.tolist() == [[3, 0, 1.0]]
    with trainlog.collecting(tmp_path / "none.csv"):  # a method that does not train: a header-only table
        pass
    assert pd.read_csv(tmp_path / "none.csv").empty
