"""``dvc_pipeline``: the DVC DAG as a Prefect flow, one task per stage, independent stages in parallel.

DVC has no parallel ``dvc repro``. Each task runs ``dvc --wait-for-lock repro --single-item STAGE``: DVC
itself decides whether the stage is stale, runs it, caches its outputs and writes its entry of dvc.lock, so
after the flow ``dvc status`` is clean exactly as after ``dvc repro``. DVC releases its repo lock while a
stage command runs and takes it again to write dvc.lock; ``--wait-for-lock`` makes concurrent writers queue
instead of failing.

Scheduling: a stage is submitted once all its upstream stages have finished (with their futures as
``wait_for``, so Prefect links them in the UI and refuses to run a stage whose upstream failed: it ends
``NotReady``). Submitting only ready stages keeps every worker busy with runnable work, whatever the runner.

Runners: ``threads`` (default; ``workers`` threads, each waiting on a ``dvc`` subprocess) or ``dask``
(prefect-dask). ``dask_address=None`` starts a local cluster of ``workers`` single-threaded processes. For
an existing cluster (``--dask tcp://host:8786``) every Dask worker needs: the repository at the same absolute
path (a shared filesystem, DVC cache included: ``.dvc/cache`` or a shared ``cache.dir``), the project's
environment (dvc, classprune, prefect, prefect-dask) with its ``python`` first on PATH, and PREFECT_API_URL
pointing at the same Prefect server as the flow.

Workers: ``workers``, or else the usable CPU cores capped by the available memory over one stage's
measured peak (flows.progress.machine_workers); the log says which and why.

Threads: each stage gets CLASSPRUNE_THREADS = ``threads_per_worker``, or else params.yaml's train.threads
lowered to usable cores // workers (at least 1; train.threads 0 means that many), which the stages apply to
torch (classprune.device.set_threads), so workers x threads fits the CPU.

Progress: after each stage the log says "done N of M stages, about T min left" (flows.progress: means per
stage kind) and the artifact ``classprune-progress`` (percent of stages done) follows it in the UI.

GPU: stages that compute on ``train.device`` (train, evaluate, baseline, pretrain) hold a slot of that
device while they run when it resolves to a CUDA GPU: ``gpu_slots`` per device (default 1), file locks under
``.dvc/tmp/gpu-slots``, so one GPU stage trains at a time and CPU stages (prune, report, data) run beside it,
across threads, local Dask processes and flows on the same machine.

CLI: ``python -m flows.pipeline --workers 2 [--targets red report] [--retries 1] [--dask ADDRESS]``.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, Failed

from flows import progress
from flows.dag import prefetch_dag, take_dag
from flows.gpu import GPU_STAGES, device_slot, stage_gpu
from flows.progress import usable_cores
from flows.prefect_setup import ensure_local_server_ready


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and its last error line."""


class DaskMissing(RuntimeError):
    """--dask without the optional [dask] extra installed; the message says what to install."""


@task(name="dvc-stage", cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: str, repo_dir: str, threads: int, bin_dir: str, gpu: str | None = None,
              gpu_slots: int = 1) -> float:
    """``dvc --wait-for-lock repro --single-item STAGE`` in ``repo_dir``: the seconds it ran (GPU wait left
    out); raises StageFailed on failure.

    The stage's stdout and stderr go to the task's log line by line while it runs (Prefect UI, task run
    page), so a long training round shows its progress instead of a silent task. With ``gpu``, it first
    waits for a slot of that device.
    """
    log = get_run_logger()
    env = {**os.environ, "CLASSPRUNE_THREADS": str(threads), "PYTHONUNBUFFERED": "1",   # lines as they come
           # stage commands say `python`: the flow's interpreter, even when the venv is not activated
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = ["dvc", "--wait-for-lock", "repro", "--single-item", stage]
    err: list[str] = []
    with device_slot(gpu, Path(repo_dir) / ".dvc" / "tmp" / "gpu-slots", gpu_slots):
        t0 = time.monotonic()
        with subprocess.Popen(cmd, cwd=repo_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, bufsize=1) as proc:
            # stderr on a thread, stdout here: neither pipe can fill up and block the stage. The thread runs
            # in this task's context: a bare thread has Prefect's import-time settings, so its log lines
            # would go to a temporary server of its own instead of the flow's server.
            reader = threading.Thread(target=contextvars.copy_context().run, args=(_pump, proc.stderr, log, err),
                                      daemon=True)
            reader.start()
            _pump(proc.stdout, log, None)
            reader.join()
            rc = proc.wait()
        seconds = time.monotonic() - t0
    if rc:
        # the stage's own last error line says why; DVC's closing "ERROR: failed to reproduce" only says that
        cause = [ln for ln in err if not ln.startswith(("ERROR: failed to reproduce", "WARNING:"))] or err or ["-"]
        log.error(f"stage {stage} exited {rc}: {cause[-1]}")
        raise StageFailed(f"stage {stage} failed (dvc exit {rc}): {cause[-1]}")
    return seconds


def _pump(stream, log, keep: list[str] | None) -> None:
    """Log each line of ``stream`` as it arrives; stderr lines are also kept for the failure message."""
    for line in stream:
        line = line.rstrip()
        if not line.strip():
            continue
        log.info(line)
        if keep is not None:
            keep.append(line.strip())


def stage_threads(repo_dir: str, workers: int) -> int:
    """params.yaml's train.threads, lowered to usable cores // workers when it would oversubscribe the CPU
    (0 means as many as fit). Results are bit-identical only at equal thread counts, so the flow keeps the
    count `dvc repro` uses whenever the CPU allows it."""
    from classprune.config import load_train

    fit = max(1, usable_cores() // workers)
    wanted = load_train(Path(repo_dir) / "params.yaml").threads
    return min(wanted, fit) if wanted > 0 else fit


def _task_runner(kind: str, workers: int, dask_address: str | None):
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise DaskMissing("the Dask task runner needs the [dask] extra: pip install -e '.[dask]' "
                              f"(in the project's environment; {exc.name or 'prefect_dask'} is missing)") from None

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    raise ValueError(f"task_runner must be 'threads' or 'dask', not {kind!r}")


@flow(name="dvc-pipeline")
def dvc_pipeline(workers: int | None = None, targets: list[str] | None = None, retries: int = 0,
                 threads_per_worker: int | None = None, task_runner: str = "threads",
                 dask_address: str | None = None, repo_dir: str = ".", gpu_slots: int = 1):
    """Run the stale part of the DVC pipeline (or of ``targets`` and their upstream) with ``workers`` in parallel.

    workers: None means as many as the usable cores and the available memory allow (progress.machine_workers).
    targets: stage names (``lt@red-0-level0``), stage groups (``lt``), scenarios (``red``) or
    baseline methods. The final state is Completed, or Failed with a message naming the failed stages
    (and their error lines) and the downstream stages that did not run.
    """
    log = get_run_logger()
    repo = str(Path(repo_dir).resolve())
    stages = take_dag(repo, targets)
    if not stages:
        log.info("0 stage(s) to run")
        return Completed(message="pipeline up to date")
    workers, why = progress.machine_workers() if workers is None else (workers, f"{workers} worker(s): as asked")
    log.info(why)
    threads = threads_per_worker or stage_threads(repo, workers)
    # importing torch to look for a GPU costs seconds: only when a stage that computes will run
    gpu = stage_gpu(repo) if any(s.base in GPU_STAGES for s in stages) else None
    log.info(f"{len(stages)} stage(s) to run with {workers} {task_runner} worker(s), {threads} thread(s) each"
             + (f"; GPU stages on {gpu}, {gpu_slots} at a time" if gpu else ""))
    stage_task = run_stage.with_options(retries=retries)
    bin_dir = str(Path(sys.executable).parent)
    futures, active, done = {}, {}, set()
    est, t0 = progress.Estimate(stages, workers, progress.load_prior(repo)), time.monotonic()
    artifact = _show_progress(None, est, f"0 of {len(stages)} stages done", log)
    with _task_runner(task_runner, workers, dask_address) as runner:
        while len(done) < len(stages):
            for s in stages:   # priority order: upstream first, longest remaining chain first
                if s.name not in futures and all(u in done for u in s.upstream):
                    fut = runner.submit(stage_task.with_options(task_run_name=s.short),
                                        {"stage": s.name, "repo_dir": repo, "threads": threads, "bin_dir": bin_dir,
                                         "gpu": gpu if s.base in GPU_STAGES else None, "gpu_slots": gpu_slots},
                                        wait_for=[futures[u] for u in s.upstream])
                    futures[s.name], active[fut] = fut, s.name
            fut = next(as_completed(list(active)))
            name = active.pop(fut)
            done.add(name)
            est.finish(name, _seconds(fut))
            line = est.progress(time.monotonic() - t0, _running(active))
            log.info(line)
            artifact = _show_progress(artifact, est, line, log)
        states = {name: fut.state for name, fut in futures.items()}
    _record(repo, est, time.monotonic() - t0, log, task_runner=task_runner, threads=threads)
    failed = {n: st for n, st in states.items() if st.is_failed() or st.is_crashed()}
    not_run = [n for n, st in states.items() if not st.is_final()]
    if failed:
        msgs = "; ".join(f"{st.message}" for st in failed.values())
        return Failed(message=f"{len(failed)} stage(s) failed: {', '.join(failed)} ({msgs}); "
                              f"{len(not_run)} downstream stage(s) not run: {', '.join(not_run)}")
    return Completed(message=f"{len(states)} stage(s) run")


def _seconds(fut) -> float | None:
    """The seconds a finished stage ran; None when it failed or did not run."""
    try:
        return float(fut.result())
    except Exception:   # its failure is reported from its state at the end of the flow
        return None


def _running(active: dict) -> dict[str, float]:
    """Seconds each running stage has run, from its Running state's time (one API read each; best effort)."""
    out, now = {}, datetime.now(timezone.utc)
    for fut, name in active.items():
        with contextlib.suppress(Exception):
            st = fut.state
            if st.is_running():
                out[name] = max(0.0, (now - st.timestamp).total_seconds())
    return out


def _show_progress(artifact_id, est: progress.Estimate, line: str, log):
    """Create or update the ``classprune-progress`` artifact; a failure is logged, never fails the run."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    try:
        if artifact_id is None:
            return create_progress_artifact(est.percent, key="classprune-progress", description=line)
        update_progress_artifact(artifact_id, est.percent, description=line)
    except Exception as exc:
        log.warning(f"progress artifact not updated: {exc!r}")
    return artifact_id


def _record(repo: str, est: progress.Estimate, elapsed: float, log, **info) -> None:
    """Durations per kind and the estimate's error at 10 % done: in the log and in progress.STAGE_TIMES."""
    for line in progress.summary(est, elapsed):
        log.info(line)
    with contextlib.suppress(OSError):
        progress.save_run(repo, est, elapsed, **info)


def add_runner_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options flows.pipeline and flows.fanout share: workers, retries, threads, Dask, repository."""
    p.add_argument("--workers", type=positive, help="stages run at once (default: the usable CPU cores, "
                                                    "fewer when the available memory is short)")
    p.add_argument("--retries", type=int, default=0, help="retries of a failed stage (default: 0)")
    p.add_argument("--threads", type=int,
                   help="torch threads per stage (default: train.threads, at most cores // workers)")
    p.add_argument("--dask", metavar="ADDRESS", nargs="?", const="local",
                   help="run on Dask (needs the [dask] extra): a scheduler address, or no value for a local "
                        "cluster of --workers processes")
    p.add_argument("--repo", default=".", help="DVC repository (default: .)")
    return p


def positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.pipeline", description=dvc_pipeline.__doc__.split("\n")[0])
    p.add_argument("--targets", nargs="*", help="stages, stage groups or scenarios (default: the whole DAG)")
    p.add_argument("--gpu-slots", type=int, default=1, help="GPU stages running at once per device (default: 1)")
    a = add_runner_args(p).parse_args(argv)
    check_dask(p, a.dask)
    prefetch_dag(a.repo, a.targets or None)
    ensure_local_server_ready()   # the temporary Prefect server's database made now, not in its start-up wait
    state = dvc_pipeline(workers=a.workers, targets=a.targets or None, retries=a.retries,
                         threads_per_worker=a.threads, repo_dir=a.repo, gpu_slots=a.gpu_slots, return_state=True,
                         **runner_args(a.dask))
    return exit_status(state)


def check_dask(p: argparse.ArgumentParser, dask: str | None) -> None:
    """--dask without the extra: one line naming the install command, before any flow starts."""
    if dask:
        import importlib.util

        if importlib.util.find_spec("prefect_dask") is None or importlib.util.find_spec("distributed") is None:
            p.exit(2, f"{p.prog}: error: --dask needs the [dask] extra: pip install -e '.[dask]'\n")


def runner_args(dask: str | None) -> dict:
    """``--dask`` alone means a local cluster; ``--dask ADDRESS`` an existing one."""
    return {"task_runner": "dask" if dask else "threads", "dask_address": None if dask in (None, "local") else dask}


def exit_status(state) -> int:
    print(f"{state.name}: {state.message}")
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
