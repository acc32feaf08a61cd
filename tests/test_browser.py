"""Opt-in UI test: headless Chromium renders the Prefect UI page of a finished flow run.

Needs Debian's chromium (``make browser-deps``) and CLASSPRUNE_BROWSER_TESTS=1. Chromium runs with no
background networking, so the only page it loads is the local Prefect server's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # _project, flows
from _project import make_project, prefect_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600),
    pytest.mark.skipif(os.environ.get("CLASSPRUNE_BROWSER_TESTS") != "1" or not Path(CHROMIUM).exists(),
                       reason="opt-in: CLASSPRUNE_BROWSER_TESTS=1 and Debian chromium (make browser-deps)"),
]


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium; the virtual time budget lets the UI fetch the run from the API and render it."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         "--hide-scrollbars", "--window-size=1400,900", *args, url],
        capture_output=True, text=True, timeout=180)


def flow_run_name(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_ui_shows_finished_flow_run(tmp_path):
    from PIL import Image, ImageStat

    from flows.pipeline import dvc_pipeline

    repo = make_project(tmp_path / "repo")
    home = tmp_path / "prefect"
    home.mkdir()
    with prefect_server(home) as (_url, port):
        state = dvc_pipeline(repo_dir=str(repo), targets=["prepare"], workers=1, return_state=True)
        assert state.is_completed(), state.message
        page = f"http://127.0.0.1:{port}/runs/flow-run/{state.state_details.flow_run_id}"
        png = tmp_path / "flow-run.png"
        proc = chromium(page, tmp_path / "chromium-profile", f"--screenshot={png}")
        dom = chromium(page, tmp_path / "chromium-profile", "--dump-dom").stdout
        run_name = flow_run_name(state)
    # the page shows this run (its name, its final state), not the UI's "can't connect" page
    assert "Can't connect" not in dom
    assert run_name in dom and "Completed" in dom, dom[-3000:]
    assert png.is_file() and png.stat().st_size > 10_000, proc.stderr[-2000:]
    img = Image.open(png).convert("L")
    assert img.size == (1400, 900)
    # a rendered page, not a blank one: many grey levels and real contrast
    assert len(set(img.getdata())) > 20 and ImageStat.Stat(img).stddev[0] > 10
