"""pipelines/seed_<s>/dvc.yaml follows run.seeds (classprune.pipelines): made, removed, restored, checked."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from classprune import pipelines

ROOT = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    shutil.copy2(ROOT / "pipelines" / "seed.dvc.yaml", tmp_path / "pipelines" / "seed.dvc.yaml")
    return tmp_path


def test_sync_makes_removes_and_restores_seed_files(tmp_path):
    root = _project(tmp_path)
    assert pipelines.sync(root, [0, 3]) == {}
    assert pipelines.present(root) == [0, 3]
    text = (root / "pipelines/seed_3/dvc.yaml").read_text()
    assert yaml.safe_load(text)["vars"] == ["../../params.yaml", {"seed": [3]}]
    assert yaml.safe_load(text)["stages"] == yaml.safe_load((root / "pipelines/seed.dvc.yaml").read_text()
                                                            .replace("SEED", "3"))["stages"]
    (root / "pipelines/seed_3/dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    mtime = (root / "pipelines/seed_0/dvc.yaml").stat().st_mtime_ns
    removed = pipelines.sync(root, [0])
    assert removed == {3: b"schema: '2.0'\nstages: {}\n"} and pipelines.present(root) == [0]
    assert (root / "pipelines/seed_0/dvc.yaml").stat().st_mtime_ns == mtime, "a file already right is not rewritten"
    pipelines.restore(root, removed)
    assert pipelines.present(root) == [0, 3]
    assert (root / "pipelines/seed_3/dvc.lock").read_bytes() == removed[3]


def test_mismatch_names_a_missing_seed_and_a_stale_copy(tmp_path):
    root = _project(tmp_path)
    pipelines.sync(root, [0, 1])
    assert pipelines.mismatch(root, [0, 1]) is None
    assert "run.seeds is [0, 1, 2]" in pipelines.mismatch(root, [0, 1, 2])
    template = root / "pipelines/seed.dvc.yaml"
    template.write_text(template.read_text().replace("stages:", "# edited\nstages:", 1))
    assert "seed_0/dvc.yaml differs" in pipelines.mismatch(root, [0, 1])
    pipelines.sync(root, [0, 1])
    assert pipelines.mismatch(root, [0, 1]) is None


def test_cli_seeds_follows_params_and_check_says_so(tmp_path):
    root = _project(tmp_path)
    (root / "params.yaml").write_text(yaml.safe_dump({"run": {"seeds": [2]}}))
    cli = [sys.executable, "-c", "from classprune.cli import main; main()", "seeds"]
    check = subprocess.run([*cli, "--check"], cwd=root, capture_output=True, text=True)
    assert check.returncode == 1 and "classprune seeds" in check.stdout
    assert subprocess.run(cli, cwd=root, capture_output=True, text=True).returncode == 0
    assert pipelines.present(root) == [2]
    assert subprocess.run([*cli, "--check"], cwd=root, capture_output=True, text=True).returncode == 0
    bad = subprocess.run(cli, cwd=tmp_path / "pipelines", capture_output=True, text=True)  # no params.yaml there
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
