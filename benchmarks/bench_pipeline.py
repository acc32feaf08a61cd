"""Wall time of the whole pipeline: the Prefect-parallel DAG vs serial ``dvc repro``, and a no-op ``dvc repro``.

Two fresh git + DVC copies of the project are made with a profile as params.yaml (tests/_project.py's
make_project): ``dvc repro`` runs in one, ``python -m flows.pipeline --workers N`` in the other, one after
the other (never at the same time). Then ``dvc repro`` runs again in the first copy: the no-op time (DVC
checks every stage's deps and outs and runs nothing). A no-op run of the flow is timed too, for reference.

The serial run's stages use train.threads torch threads; the flow gives each of its N workers
cpu_count // N threads (CLASSPRUNE_THREADS), as it does in production. Without PREFECT_API_URL the flow
starts Prefect's temporary local server, and that start-up is part of its wall time.

One run each (a pipeline takes minutes); run it on an otherwise idle machine.

    python benchmarks/bench_pipeline.py [--profile tiny|default|PATH] [--workers 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, print_result, row  # noqa: E402

FLOW = ROOT / "flows" / "pipeline.py"


def flow_missing() -> str | None:
    """Why the flow part cannot run, or None."""
    if not FLOW.is_file():
        return f"{FLOW.relative_to(ROOT)} does not exist yet"
    text = FLOW.read_text()
    if "__main__" not in text or "--workers" not in text:
        return f"{FLOW.relative_to(ROOT)} has no command line with --workers yet"
    return None


def profile_path(profile: str) -> Path:
    if profile == "default":
        return ROOT / "params.yaml"
    candidate = ROOT / "profiles" / f"{profile}.yaml"
    if candidate.is_file():
        return candidate
    path = Path(profile).resolve()
    if not path.is_file():
        raise SystemExit(f"error: profile {profile!r} is neither default, a file in profiles/ nor a params file")
    return path


def _make_project():
    """tests/_project.py's make_project, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_classprune_test_project", ROOT / "tests" / "_project.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_project


def _env(prefect_home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    env.pop("CLASSPRUNE_THREADS", None)  # serial: train.threads; flow: its own per-worker setting
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # `python` in dvc.yaml
    return env


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, str, dict]:
    """Wall seconds, output, and CPU: all of the run's processes, and the stages' own start-up/compute split
    (each stage appends it to CLASSPRUNE_TIMING_LOG, see classprune.cli); the rest is dvc, Prefect and the
    interpreters' exits. Imports a step makes lazily inside its function count as compute: the start-up
    share is a lower bound."""
    timing = log.with_suffix(".timing.jsonl")
    timing.unlink(missing_ok=True)
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**env, "CLASSPRUNE_TIMING_LOG": str(timing)}, capture_output=True,
                          text=True)
    elapsed, cpu = time.perf_counter() - t0, _children_cpu() - c0
    out = proc.stdout + proc.stderr
    log.write_text(out)
    if proc.returncode:
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}); log {log}:\n{tail}")
    stages = [json.loads(ln) for ln in timing.read_text().splitlines()] if timing.is_file() else []
    compute = sum(st["compute_cpu_s"] for st in stages)
    return elapsed, out, {"cpu_s": cpu, "compute_cpu_s": compute, "stage_startup_cpu_s": sum(st["startup_cpu_s"] for st in stages),
                          "startup_share": (cpu - compute) / cpu if cpu else None, "stages_timed": len(stages)}


def run(profile: str = "tiny", workers: int = 2, keep: str | None = None) -> dict:
    reason = flow_missing()
    if reason:
        return {"name": "pipeline", "rows": [], "skipped": reason,
                "notes": [f"pipeline benchmark skipped: {reason}"], "details": {}}
    params = profile_path(profile)
    make_project = _make_project()
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="classprune-bench-pipeline-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        serial, parallel = base / "serial", base / "flow"
        for d in (serial, parallel):
            if d.exists():
                shutil.rmtree(d)
            make_project(d, params)
        env = _env(base / "prefect-home")
        flow_cmd = [sys.executable, "-m", "flows.pipeline", "--workers", str(workers)]
        t_serial, out_serial, cpu_serial = _timed(["dvc", "repro"], serial, env, base / "serial.log")
        t_flow, _, cpu_flow = _timed(flow_cmd, parallel, env, base / "flow.log")
        t_noop, out_noop, _ = _timed(["dvc", "repro"], serial, env, base / "serial-noop.log")
        t_flow_noop, _, _ = _timed(flow_cmd, parallel, env, base / "flow-noop.log")
        n_stages = len(re.findall(r"Running stage '", out_serial))
        noop_ran = re.findall(r"Running stage '([^']+)'", out_noop)
        status = subprocess.run(["dvc", "status"], cwd=parallel, env=env, capture_output=True, text=True).stdout
        m_serial, m_flow = (json.loads((d / "reports" / "metrics.json").read_text()) for d in (serial, parallel))
        committed = ROOT / "reports" / "metrics.json"  # the default's committed results: recomputed bit for bit?
        m_committed = json.loads(committed.read_text()) if profile == "default" and committed.is_file() else None
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    speedup = t_serial / t_flow
    notes = [
        f"pipeline on profile {profile} ({params.name}), {n_stages} stages; one run each, sequentially",
        f"  serial dvc repro {t_serial:.1f} s; Prefect flow with {workers} workers {t_flow:.1f} s: "
        f"{speedup:.2f}x faster; flow leaves dvc status clean: {'up to date' in status}; "
        f"same metrics.json: {m_serial == m_flow}",
        f"  no-op dvc repro {t_noop:.2f} s (ran {len(noop_ran)} stages); no-op flow {t_flow_noop:.2f} s",
        *([f"  flow metrics.json equal to the committed reports/metrics.json: {m_flow == m_committed}"]
          if m_committed is not None else []),
        *(f"  {name}: CPU {c['cpu_s']:.0f} s, inside the stages' steps {c['compute_cpu_s']:.0f} s, start-up and "
          f"orchestration {c['cpu_s'] - c['compute_cpu_s']:.0f} s ({100 * c['startup_share']:.0f} %; of it the "
          f"stages' interpreters and imports {c['stage_startup_cpu_s']:.0f} s)"
          for name, c in (("serial", cpu_serial), ("flow", cpu_flow))),
    ]
    return {
        "name": "pipeline",
        "rows": [
            row(f"pipeline ({profile}, {n_stages} stages): Prefect {workers} workers vs serial dvc repro",
                ours=t_flow, reference=t_serial, unit="s", ratio=speedup, ratio_name="faster", target="> 1x",
                met=speedup > 1),
            *(row(f"pipeline ({profile}) {name}: CPU outside the stages' steps (start-up) vs all CPU",
                  ours=c["cpu_s"] - c["compute_cpu_s"], reference=c["cpu_s"], unit="s", ratio=c["startup_share"],
                  ratio_name="of CPU", target="<= 0.2", met=c["startup_share"] <= 0.2)
              for name, c in (("serial dvc repro", cpu_serial), (f"flow, {workers} workers", cpu_flow))),
            row("no-op dvc repro (vs the full serial run)", ours=t_noop, reference=t_serial, unit="s",
                ratio=t_noop / t_serial, ratio_name="of full", target="runs nothing", met=not noop_ran),
            row(f"no-op flow, {workers} workers (vs the full flow run)", ours=t_flow_noop, reference=t_flow, unit="s",
                ratio=t_flow_noop / t_flow, ratio_name="of full", target="< 10 s", met=t_flow_noop < 10),
        ],
        "notes": notes,
        "details": {"profile": profile, "params": str(params), "workers": workers, "stages": n_stages,
                    "serial_s": t_serial, "flow_s": t_flow, "noop_dvc_repro_s": t_noop, "noop_flow_s": t_flow_noop,
                    "noop_ran": noop_ran, "cpu_serial": cpu_serial, "cpu_flow": cpu_flow, "flow_status_clean": "up to date" in status,
                    "same_metrics": m_serial == m_flow,
                    "matches_committed": None if m_committed is None else m_flow == m_committed},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="tiny", help="tiny (default), default (params.yaml), a profiles/ name or a path")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", metavar="DIR", help="build the copies in DIR and keep them (logs included)")
    a = p.parse_args(argv)
    print_result(run(a.profile, a.workers, a.keep))


if __name__ == "__main__":
    main()
