"""Opt-in UI test: headless Chromium renders the Prefect UI pages of a finished flow run and its metrics.

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
    pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(1200),
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


def metrics_artifact_id(api_url: str, state, key: str = "classprune-metrics") -> str:
    """The run's artifact with ``key`` (plain HTTP: see tests/test_flows.py)."""
    import httpx

    arts = httpx.post(f"{api_url}/artifacts/filter", json={
        "artifacts": {"key": {"any_": [key]}},
        "flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}}}).raise_for_status().json()
    assert len(arts) == 1, arts
    return arts[0]["id"]


def assert_rendered(png: Path, proc: subprocess.CompletedProcess) -> None:
    """A rendered page, not a blank one: many grey levels and real contrast."""
    from PIL import Image, ImageStat

    assert png.is_file() and png.stat().st_size > 10_000, proc.stderr[-2000:]
    img = Image.open(png).convert("L")
    assert img.size == (1400, 900)
    assert len(set(img.getdata())) > 20 and ImageStat.Stat(img).stddev[0] > 10


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run for both pages: the fan-out flow (what `make repro` runs) on a cut-down tiny profile,
    under a real Prefect server that stays up for the UI test. Its baseline is SNIP + training, so that the
    DVC plots page also has a baseline's training curves: one pipeline run instead of a flow and a repro."""
    from flows.fanout import classprune_fanout

    tmp = tmp_path_factory.mktemp("browser")
    repo = make_project(tmp / "repo", overrides={"baselines.methods": ["snip_trained"]})
    home = tmp / "prefect"
    home.mkdir()
    with prefect_server(home) as (url, port):
        state = classprune_fanout(repo_dir=str(repo), workers=2, return_state=True)
        assert state.is_completed(), state.message
        yield {"repo": repo, "state": state, "url": url, "port": port}


def test_ui_shows_finished_flow_run_and_its_metrics_artifact(finished, tmp_path):
    state, url, port = finished["state"], finished["url"], finished["port"]
    run_page = f"http://127.0.0.1:{port}/runs/flow-run/{state.state_details.flow_run_id}"
    artifact_page = f"http://127.0.0.1:{port}/artifacts/artifact/{metrics_artifact_id(url, state)}"
    figure_page = f"http://127.0.0.1:{port}/artifacts/artifact/{metrics_artifact_id(url, state, 'classprune-figure')}"
    shots = {}
    for name, page in (("flow-run", run_page), ("artifact", artifact_page), ("figure", figure_page)):
        png = tmp_path / f"{name}.png"
        shots[name] = (png, chromium(page, tmp_path / "chromium-profile", f"--screenshot={png}"),
                       chromium(page, tmp_path / "chromium-profile", "--dump-dom").stdout)
    run_name = flow_run_name(state)
    run_dom, artifact_dom = shots["flow-run"][2], shots["artifact"][2]
    # the run page shows this run (its name, its final state), not the UI's "can't connect" page
    assert "Can't connect" not in run_dom
    assert run_name in run_dom and "Completed" in run_dom, run_dom[-3000:]
    # the artifact page shows the metrics table: its key, its columns, a scenario's rows
    assert "classprune-metrics" in artifact_dom, artifact_dom[-3000:]
    assert all(col in artifact_dom for col in ("auc", "fnr", "fpr")) and "black" in artifact_dom, artifact_dom[-3000:]
    # the figure artifact shows the PNG inline: the UI's markdown keeps the data: URI image
    assert '<img' in shots["figure"][2] and 'src="data:image/png;base64,' in shots["figure"][2], shots["figure"][2][-3000:]
    for png, proc, _dom in shots.values():
        assert_rendered(png, proc)


VEGA = Path(__file__).parents[1] / ".browser" / "node_modules"  # make browser-deps (npm, pinned)
VEGA_FILES = {"vega": "vega/build/vega.min.js", "vega-lite": "vega-lite/build/vega-lite.min.js",
              "vega-embed": "vega-embed/build/vega-embed.min.js"}


def test_dvc_plots_html_draws_training_and_roc_curves(finished, tmp_path):
    """`dvc plots show` of the finished tiny run (the flow ran its DVC stages), opened in headless Chromium:
    every chart is drawn, the training curves per round and the ROC/PR curves per method included. DVC's page
    loads vega from a CDN; the same vega builds from npm (make browser-deps) replace those script tags,
    Chromium stays offline."""
    import re

    if not all((VEGA / f).is_file() for f in VEGA_FILES.values()):
        pytest.skip("vega builds missing: run make browser-deps (npm)")
    repo = finished["repo"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=300)
    html = (tmp_path / "plots" / "index.html").read_text()
    scripts = "\n".join(f'<script src="file://{VEGA / f}"></script>' for f in VEGA_FILES.values())
    html, n = re.subn(r'(<script src="https://cdn\.jsdelivr\.net/npm/vega[^"]*"></script>\s*)+', scripts, html)
    assert n == 1, "DVC's page template changed: no vega script tags to replace"
    page = tmp_path / "plots" / "local.html"
    page.write_text(html)
    charts = html.count("vegaEmbed(")
    dom = chromium(page.as_uri(), tmp_path / "chromium-profile", "--allow-file-access-from-files",
                   "--dump-dom").stdout
    # vega-embed draws every chart into a canvas or svg inside its div; a failed one leaves an error text
    drawn = len(re.findall(r'<(?:canvas|svg)[^>]*class="marks"', dom))
    assert drawn == charts and charts >= 8 + 3, (drawn, charts, dom[-2000:])
    for text in ("reports/training/black/seed_0.csv", "ROC (test split, first seed)",
                 "reports/training/snip_trained/seed_0.csv", "Precision-recall (val split, first seed)"):
        assert text in html
    png = tmp_path / "plots.png"
    assert_rendered(png, chromium(page.as_uri(), tmp_path / "chromium-profile", "--allow-file-access-from-files",
                                  f"--screenshot={png}"))


def test_the_documentation_site_opens_and_draws_its_front_figure(tmp_path):
    """`mkdocs build --strict` (no page links to a missing page or anchor), served on 127.0.0.1: the home page
    renders in headless Chromium and fetches its figure (reports/figures/test.png), and every page of the nav
    answers."""
    import functools
    import http.server
    import threading

    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=root,
                   check=True, capture_output=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    fetched: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):
            fetched.append((self.path, int(code) if str(code).isdigit() else 0))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        png = tmp_path / "home.png"
        proc = chromium(url, tmp_path / "chromium-profile", f"--screenshot={png}")
        assert_rendered(png, proc)
        assert ("/reports/figures/test.png", 200) in fetched, fetched
        import urllib.request

        for page in ("getting-started/", "results/", "verdicts/", "architecture/", "reference/"):
            with urllib.request.urlopen(url + page) as r:
                assert r.status == 200 and b"<h1" in r.read()
    finally:
        server.shutdown()
