"""``classprune_fanout``: scenarios x seeds (x datasets) through the parallel pipeline, metrics as artifacts.

What it does, in order:
1. Fan-out is declared the DVC way: ``run.scenarios`` and ``run.seeds`` in params.yaml (the stage matrices
   expand over them) are set to the requested lists for the run, comments kept, as ``dvc exp run -S``
   does, and ``pipelines/seed_<s>/`` (one DVC file per seed, classprune.pipelines) follows run.seeds.
   Seed s of scenario X writes to ``models/X/seed_<s>/``. Nothing is edited when neither list is given.
2. ``dvc_pipeline`` runs as a subflow: every stale stage, independent chains in parallel.
3. params.yaml gets its original bytes back, whatever happened, and the pipeline directories of the seeds
   the run left out come back with their lock files. The results stay where the pipeline
   writes them (models/, reports/, dvc.lock: as run with the fan-out's parameters), and, in a git
   repository, ``dvc exp save`` first records them as a DVC experiment (params, metrics, dvc.lock; named in
   the log and the flow's final message): ``dvc exp show`` compares it, ``dvc exp apply NAME`` brings
   its params back. ``dvc status`` then lists the fan-out's stages as changed against params.yaml.
4. The versioned reports written by the ``report`` stage (reports/rounds.csv, reports/summary.md,
   reports/figures/) are published on the flow run: a table artifact ``classprune-metrics`` (AUC,
   accuracy, FNR, FPR per method, seed, round and split), a markdown artifact ``classprune-summary`` and
   the figure of report.split as a markdown artifact ``classprune-figure`` (the PNG embedded as a data:
   URI, so the UI shows it without a file server). The keys are stable, so the UI's Artifacts page keeps
   one history per key across runs.

``datasets``: ``data.source`` values (synthetic, crack, folder, isic) run one after another in the same
workspace (their paths, e.g. data.root, must already be set in params.yaml); the table gets a ``dataset``
column and the summary a section per dataset. The workspace ends on the last dataset.

CLI: ``python -m flows.fanout --scenarios red black --seeds 0 1 --workers 2 [--threads 1]`` (or
``classprune run ...``).
"""
from __future__ import annotations

import argparse
import base64
import csv
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed

from classprune import pipelines
from flows.prefect_setup import ensure_local_server_ready
from flows.pipeline import add_runner_args, check_dask, dvc_pipeline, exit_status, prefetch_dag, runner_args

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
        if "channel_scenarios" in p["run"]:  # a channel ticket starts from its scenario's weight chain
            kept = [s for s in p["run"]["channel_scenarios"] if s in scenarios]
            p["run"]["channel_scenarios"] = flow_style(CommentedSeq(kept))
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


def figure_markdown(png: Path, caption: str) -> str:
    """The PNG inline as a data: URI: the artifact shows the figure wherever the UI runs, no file server."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f"### {caption}\n\n![{caption}](data:image/png;base64,{data})\n"


def save_experiment(repo: Path, log) -> str | None:
    """``dvc exp save``: the fan-out's params, dvc.lock and metrics as a DVC experiment; None outside git."""
    if not (repo / ".git").exists():
        return None
    name = f"fanout-{time.strftime('%Y%m%d-%H%M%S')}"
    # -I: a seed new to this run has untracked pipeline files (pipelines/seed_<s>/), its dvc.lock among them
    proc = subprocess.run(["dvc", "exp", "save", "--name", name, "--force", "-I", "pipelines"], cwd=repo,
                          capture_output=True, text=True)
    if proc.returncode:
        log.warning(f"dvc exp save failed, results are only in the workspace: {proc.stderr.strip()[-300:]}")
        return None
    return name


@flow(name="classprune-fanout")
def classprune_fanout(scenarios: list[str] | None = None, seeds: list[int] | None = None,
                      datasets: list[str] | None = None, workers: int | None = None, retries: int = 0,
                      threads: int | None = None, task_runner: str = "threads", dask_address: str | None = None,
                      repo_dir: str = "."):
    """Run scenarios x seeds (x datasets) with the parallel DVC pipeline and publish the metrics as artifacts.

    params.yaml is left as it was; the results stay in the workspace and, in git, as a DVC experiment.
    workers: stages at once (default: the usable CPU cores, fewer when the available memory is short).
    threads: torch threads per stage (default: train.threads, at most cores // workers).
    """
    log = get_run_logger()
    repo = Path(repo_dir).resolve()
    params_file = repo / "params.yaml"
    original = params_file.read_bytes()
    rows, summaries, experiment, removed = [], [], None, {}
    try:
        for dataset in datasets or [None]:
            if scenarios or seeds or dataset:
                set_params(params_file, scenarios, seeds, dataset)
                if seeds:   # the per-seed pipeline files follow; the seeds left out come back afterwards
                    removed |= pipelines.sync(repo, list(seeds))
                log.info(f"params.yaml for this run: scenarios={scenarios or 'unchanged'} "
                         f"seeds={seeds or 'unchanged'} dataset={dataset or 'unchanged'}")
            state = dvc_pipeline(workers=workers, retries=retries, threads_per_worker=threads,
                                 task_runner=task_runner, dask_address=dask_address, repo_dir=str(repo),
                                 return_state=True)
            if not state.is_completed():
                return Failed(message=f"pipeline{f' ({dataset})' if dataset else ''}: {state.message}")
            rows += [{"dataset": dataset, **r} if dataset else r for r in read_metrics(repo)]
            summary = (repo / "reports" / "summary.md").read_text()
            summaries.append(f"## Dataset: {dataset}\n\n{summary}" if dataset else summary)
        if params_file.read_bytes() != original:
            experiment = save_experiment(repo, log)
    finally:
        pipelines.restore(repo, removed)
        if params_file.read_bytes() != original:
            params_file.write_bytes(original)
            log.info("params.yaml restored; models/, reports/ and dvc.lock hold the fan-out's results"
                     + (f", saved as DVC experiment {experiment} (dvc exp show; dvc exp apply {experiment})"
                        if experiment else ""))
    create_table_artifact(key="classprune-metrics", table=rows,
                          description="AUC-ROC, accuracy, FNR, FPR per method, seed, round and split "
                                      "(reports/rounds.csv)")
    create_markdown_artifact(key="classprune-summary", markdown="\n\n".join(summaries),
                             description="reports/summary.md")
    split = _report_split(repo)
    png = repo / "reports" / "figures" / f"{split}.png"
    if png.is_file():
        create_markdown_artifact(key="classprune-figure", description=f"reports/figures/{split}.png",
                                 markdown=figure_markdown(png, f"AUC, accuracy, FNR, FPR against remaining "
                                                               f"weights ({split} split)"))
    where = f"; results saved as DVC experiment {experiment}" if experiment else ""
    return Completed(message=f"{len(rows)} metric rows published{where}")


def _report_split(repo: Path) -> str:
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    return (params.get("report") or {}).get("split") or "test"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.fanout", description=classprune_fanout.__doc__.split("\n")[0])
    p.add_argument("--scenarios", nargs="*", help="scenarios to run (default: run.scenarios of params.yaml); "
                   "run.channel_scenarios keeps those among them")
    p.add_argument("--seeds", nargs="*", type=int, help="seeds to run (default: run.seeds of params.yaml)")
    p.add_argument("--datasets", nargs="*", help="data.source values, run one after another")
    return add_runner_args(p)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    check_dask(p, a.dask)
    if not (a.scenarios or a.seeds or a.datasets):   # else the flow edits params.yaml first: nothing to reuse
        prefetch_dag(a.repo, None)
    ensure_local_server_ready()   # the temporary Prefect server's database made now, not in its start-up wait
    state = classprune_fanout(scenarios=a.scenarios or None, seeds=a.seeds or None, datasets=a.datasets or None,
                              workers=a.workers, retries=a.retries, threads=a.threads, repo_dir=a.repo,
                              return_state=True, **runner_args(a.dask))
    return exit_status(state)


if __name__ == "__main__":
    sys.exit(main())
