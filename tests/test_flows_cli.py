"""Flow command lines and environment without a server: shared options, Dask extra, PREFECT_HOME default."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_fanout_and_pipeline_share_the_runner_options():
    from flows import fanout, pipeline

    a = fanout.parser().parse_args(["--threads", "1", "--workers", "3", "--scenarios", "red"])
    assert (a.threads, a.workers, a.scenarios) == (1, 3, ["red"])
    with pytest.raises(SystemExit):
        fanout.parser().parse_args(["--workers", "0"])
    import inspect

    assert "threads" in inspect.signature(fanout.classprune_fanout.fn).parameters
    assert "threads_per_worker" in inspect.signature(pipeline.dvc_pipeline.fn).parameters


def test_dask_without_the_extra_names_the_install_command(monkeypatch, capsys):
    from flows import pipeline

    monkeypatch.setitem(sys.modules, "prefect_dask", None)    # import fails as if not installed
    with pytest.raises(pipeline.DaskMissing, match=r"pip install -e '\.\[dask\]'"):
        pipeline._task_runner("dask", 2, None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--dask"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[dask]'" in err


def test_prefect_home_defaults_to_the_project_only_when_unset(tmp_path):
    code = "import flows, prefect.settings as s; print(s.get_current_settings().home)"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert Path(out.stdout.strip()) == ROOT / ".prefect", out.stderr[-500:]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PREFECT_HOME": str(tmp_path)},
                         capture_output=True, text=True)
    assert Path(out.stdout.strip()) == tmp_path, out.stderr[-500:]
