"""End-to-end: the real `dvc repro` on the tiny profile in a temporary git + DVC copy of the project."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _project import git, make_project  # noqa: E402

pytestmark = pytest.mark.slow


def run(cwd: Path, *cmd: str, check: bool = True) -> str:
    """stdout + stderr of ``cmd``; the venv's bin first on PATH because stage commands say `python`."""
    env = {**os.environ, "CLASSPRUNE_THREADS": "2"}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + ":" + env.get("PATH", "")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("dvc") / "proj")
    out = run(proj, "dvc", "repro")
    return proj, out


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_repro_writes_the_artifact_contract(project):
    proj, out = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    scenarios, rounds, rate = params["run"]["scenarios"], len(params["prune"]["rounds"]), params["prune"]["rate"]
    w0s = [load(proj / "models" / sc / "round_0" / "rewound.pt") for sc in scenarios]
    assert all(torch.equal(w0s[0][n], w[n]) for w in w0s for n in w0s[0]), "scenarios must share W0"
    w0 = w0s[0]
    for sc in scenarios:
        for k in range(1, rounds + 1):
            d = proj / "models" / sc / f"round_{k}"
            weights, mask, rewound = load(d / "weights.pt"), load(d / "mask.pt"), load(d / "rewound.pt")
            next_mask = load(d / "next_mask.pt")
            for n, m in mask.items():
                assert m.dtype == torch.bool
                assert abs(int(m.sum()) - m.numel() * (1 - rate) ** (k - 1)) <= 1, (sc, k, n)
                assert torch.all(weights[n][~m] == 0), f"pruned weights trained in {sc} round {k} {n}"
                assert not torch.any(next_mask[n] & ~m), "masks only shrink"
                assert torch.equal(rewound[n][next_mask[n]], w0[n][next_mask[n]]), "survivors rewind to W0"
                assert torch.all(rewound[n][~next_mask[n]] == 0)
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    assert set(scenarios) <= set(metrics)
    for sc in scenarios:
        assert sorted(metrics[sc]) == [f"round_{k}" for k in range(1, rounds + 1)]
        for k in range(1, rounds + 1):
            entry = metrics[sc][f"round_{k}"]
            assert {"auc", "accuracy", "fnr", "fpr", "remaining"} <= set(entry)
            assert entry["remaining"] == pytest.approx((1 - rate) ** (k - 1), abs=1e-4)
    for split in ("test", "val"):
        assert (proj / "reports" / "figures" / f"{split}.png").stat().st_size > 10_000
        for sc in scenarios:
            assert len((proj / "reports" / "curves" / split / f"{sc}.csv").read_text().splitlines()) == rounds + 1
    summary = (proj / "reports" / "summary.md").read_text()
    assert "FN budget" in summary and all(sc in summary for sc in scenarios)
    assert (proj / "dvc.lock").is_file()


def test_second_repro_runs_nothing(project):
    proj, _ = project
    out = run(proj, "dvc", "repro")
    assert ran_stages(out) == []
    assert "up to date" in out.lower() or "didn't change" in out.lower()


def test_changing_one_scenario_reruns_only_its_stages_and_metrics_diff_shows_it(project):
    proj, _ = project
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "results")
    params = (proj / "params.yaml").read_text()
    changed = re.sub(r"(black: \{gamma_first: 1, +gamma_rest: 5, +lam: )5", r"\g<1>1", params)
    assert changed != params
    (proj / "params.yaml").write_text(changed)
    out = run(proj, "dvc", "repro")
    stages = ran_stages(out)
    assert stages, out
    assert all("black" in s or s == "report" for s in stages), stages
    assert any(s.startswith("train@black") for s in stages) and "report" in stages
    diff = json.loads(run(proj, "dvc", "metrics", "diff", "--json"))
    changed_keys = [k for f in diff.values() for k in f]
    assert any(k.startswith("black.") for k in changed_keys), diff
    assert not any(k.startswith("red.") for k in changed_keys), diff
