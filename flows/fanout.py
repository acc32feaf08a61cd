"""``classprune_fanout``: scenarios x seeds (x datasets) through the parallel pipeline, metrics as artifacts.

What it does, in order:
1. Fan-out is declared the DVC way: ``run.scenarios`` and ``run.seeds`` in params.yaml (dvc.yaml's matrix
   expands over them) are set to the requested lists, comments kept, as ``dvc exp run -S`` does in the
   workspace. Seed s of scenario X writes to ``models/X/seed_<s>/``. The edit stays, so dvc.lock, params.yaml and the reports agree afterwards: commit them to
   version the experiment, or ``git checkout params.yaml`` to go back. Nothing is edited when neither
   list is given.
2. ``dvc_pipeline`` runs as a subflow: every stale stage, independent chains in parallel.
3. The versioned reports written by the ``report`` stage (reports/rounds.csv, reports/summary.md) are
   published on the flow run: a table artifact ``classprune-metrics`` (AUC, accuracy, FNR, FPR per method,
   seed, round and split) and a markdown artifact ``classprune-summary``. The keys are stable, so the UI's
   Artifacts page keeps one history per key across runs.

``datasets``: ``data.source`` values (synthetic, crack, folder, isic) run one after another in the same
workspace (their paths, e.g. data.root, must already be set in params.yaml); the table gets a ``dataset``
column and the summary a section per dataset. The workspace ends on the last dataset.

CLI: ``python -m flows.fanout --scenarios red black --seeds 0 1 --workers 2``.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed

from flows.pipeline import dvc_pipeline, exit_status, runner_args

METRIC_COLUMNS = ("method", "seed", "round", "split", "remaining", "auc", "accuracy", "fnr", "fpr")


def set_params(params_file: Path, scenarios: list[str] | None = None, seeds: list[int] | None = None,
               dataset: str | None = None) -> None:
    """Write the fan-out into params.yaml with ruamel (a dvc dependency): comments, quotes and flow style kept."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    def flow_style(node):
        node.fa.set_flow_style()
        return node

    yaml = YAML()
    yaml.preserve_quotes, yaml.width = True, 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    p = yaml.load(params_file.read_text())
    if scenarios:
        p["run"]["scenarios"] = flow_style(CommentedSeq(scenarios))
    if seeds:
        p["run"]["seeds"] = flow_style(CommentedSeq(int(s) for s in seeds))
    if dataset:
        p["data"]["source"] = dataset
    with open(params_file, "w") as f:
        yaml.dump(p, f)


def read_metrics(repo: Path) -> list[dict]:
    """Rows of reports/rounds.csv (one per method, seed, round and split), metric columns as rounded numbers."""
    def value(key: str, v: str):
        if key in ("method", "split"):
            return v
        if key in ("seed", "round"):
            return int(v)
        return round(float(v), 6 if key == "remaining" else 4)  # readable in the UI; the CSV keeps all digits

    with open(repo / "reports" / "rounds.csv", newline="") as f:
        return [{k: value(k, row[k]) for k in METRIC_COLUMNS if k in row} for row in csv.DictReader(f)]


@flow(name="classprune-fanout")
def classprune_fanout(scenarios: list[str] | None = None, seeds: list[int] | None = None,
                      datasets: list[str] | None = None, workers: int = 2, retries: int = 0,
                      task_runner: str = "threads", dask_address: str | None = None, repo_dir: str = "."):
    """Run scenarios x seeds (x datasets) with the parallel DVC pipeline and publish the metrics as artifacts."""
    log = get_run_logger()
    repo = Path(repo_dir).resolve()
    rows, summaries = [], []
    for dataset in datasets or [None]:
        if scenarios or seeds or dataset:
            set_params(repo / "params.yaml", scenarios, seeds, dataset)
            log.info(f"params.yaml: scenarios={scenarios or 'unchanged'} seeds={seeds or 'unchanged'} "
                     f"dataset={dataset or 'unchanged'}")
        state = dvc_pipeline(workers=workers, retries=retries, task_runner=task_runner,
                             dask_address=dask_address, repo_dir=str(repo), return_state=True)
        if not state.is_completed():
            return Failed(message=f"pipeline{f' ({dataset})' if dataset else ''}: {state.message}")
        rows += [{"dataset": dataset, **r} if dataset else r for r in read_metrics(repo)]
        summary = (repo / "reports" / "summary.md").read_text()
        summaries.append(f"## Dataset: {dataset}\n\n{summary}" if dataset else summary)
    create_table_artifact(key="classprune-metrics", table=rows,
                          description="AUC-ROC, accuracy, FNR, FPR per method, seed, round and split "
                                      "(reports/rounds.csv)")
    create_markdown_artifact(key="classprune-summary", markdown="\n\n".join(summaries),
                             description="reports/summary.md")
    return Completed(message=f"{len(rows)} metric rows published")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.fanout", description=classprune_fanout.__doc__)
    p.add_argument("--scenarios", nargs="*")
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--datasets", nargs="*", help="data.source values, run one after another")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--dask", metavar="ADDRESS", nargs="?", const="local")
    p.add_argument("--repo", default=".")
    a = p.parse_args(argv)
    state = classprune_fanout(scenarios=a.scenarios or None, seeds=a.seeds or None, datasets=a.datasets or None,
                              workers=a.workers, retries=a.retries, repo_dir=a.repo, return_state=True,
                              **runner_args(a.dask))
    return exit_status(state)


if __name__ == "__main__":
    sys.exit(main())
