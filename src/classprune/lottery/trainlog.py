"""Training curves: every step's loss, its parts, the lr and the gradient norm, written with DVCLive.

Each training run (an LT round, pretraining, a baseline's training) logs into a DVCLive directory beside its
outputs (``<dir>/plots/metrics/train/<name>.tsv``, one row per step; ``metrics.json`` the last values).
The per-round files of a chain are gathered into one table per chain, ``reports/training/<method>/
seed_<s>.csv`` (round, step and the curves), which dvc.yaml declares as plots, so `dvc plots show` draws one
chain's rounds together. Logging reads values the step already computed (the loss, the clipped gradient's
norm) and the loss parts from the detached logits: it changes no weight.
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

import pandas as pd

CURVES = ("loss", "wce", "rank", "lr", "grad_norm")
TRAINING = Path("reports/training")
# Where a baseline's training runs log (set by ``collecting``); a method stays ``fn(params, seed, device)``.
_RUNS: ContextVar[tuple[Path, dict[int, Path]] | None] = ContextVar("classprune_trainlog_runs", default=None)


class TrainLog:
    """A DVCLive run in ``directory``; call it with one step's values."""

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live

        self.directory = Path(directory)
        self.live = Live(dir=str(self.directory), save_dvc_exp=False, dvcyaml=None, report=None)
        self.steps = 0

    def __call__(self, values: Mapping[str, float]) -> None:
        # The step is set, not advanced with next_step(): DVCLive's next_step re-reads every curve so far for
        # Studio even when Studio is off (quadratic in the steps; 4 % of a training step at 200 steps).
        self.live.step = self.steps
        for name, value in values.items():
            self.live.log_metric(f"train/{name}", float(value))
        self.steps += 1

    def close(self) -> None:
        self.live.end()

    def __enter__(self) -> TrainLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read(directory: str | Path) -> pd.DataFrame:
    """One run's curves as a table (step + one column per curve); empty when nothing was logged."""
    folder = Path(directory) / "plots" / "metrics" / "train"
    table = None
    for name in CURVES:
        path = folder / f"{name}.tsv"
        if path.is_file():
            curve = pd.read_csv(path, sep="\t")[["step", name]]
            table = curve if table is None else table.merge(curve, on="step", how="outer")
    return table if table is not None else pd.DataFrame(columns=["step"])


def gather(runs: Mapping[int, str | Path], path: str | Path) -> pd.DataFrame:
    """The runs of one chain (round or level -> DVCLive dir) as one CSV with a ``round`` column."""
    from .. import io

    parts = [read(d).assign(round=k) for k, d in runs.items()]
    parts = [p for p in parts if len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["round", "step", *CURVES])
    df = df.reindex(columns=["round", "step", *CURVES])  # every curve, empty where a run has none (pretrain: no parts)
    io.write_text(path, df.to_csv(index=False, float_format="%.6g"))
    return df


def chain_csv(method: str, seed: int) -> Path:
    return TRAINING / method / f"seed_{seed}.csv"


@contextlib.contextmanager
def collecting(path: str | Path) -> Iterator[None]:
    """Gather the runs that ``level`` opens inside the block into the CSV ``path`` (their DVCLive dirs are
    temporary: a baseline stage's outputs are its result file and this table)."""
    with tempfile.TemporaryDirectory(prefix="classprune-trainlog-") as tmp:
        runs: dict[int, Path] = {}
        token = _RUNS.set((Path(tmp), runs))
        try:
            yield
            gather(runs, path)
        finally:
            _RUNS.reset(token)


def level(k: int) -> TrainLog | None:
    """The TrainLog of level ``k`` of a baseline inside ``collecting``; None outside (nothing logged)."""
    active = _RUNS.get()
    if active is None:
        return None
    root, runs = active
    runs[k] = root / f"level_{k}"
    return TrainLog(runs[k])
