"""The committed dvc.lock (and so every committed report) was produced by this code and these params.

In a fresh clone the outputs are missing (DVC's cache is not in git), so `dvc status` lists them as
deleted or not in cache; anything else among the deps (a modified source file, a changed param) means
the committed results are stale: rerun `make repro`, or `dvc commit` after checking that a change is
output-neutral.
"""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _stale_deps(status: dict) -> dict[str, dict]:
    stale = {}
    for stage, entries in status.items():
        for entry in entries:
            deps = entry.get("changed deps", {}) if isinstance(entry, dict) else {}
            changed = {path: state for path, state in deps.items() if state != "deleted"}
            if changed:
                stale[stage] = changed
    return stale


def test_stale_deps_are_found_and_missing_outputs_are_not():
    status = {"lt@red-0-level1": [{"changed deps": {"src/classprune/lottery/train.py": "modified",
                                                    "models/red/seed_0/round_1/mask.pt": "deleted"}},
                                  {"changed outs": {"models/red/seed_0/round_2/mask.pt": "not in cache"}}],
              "report": [{"changed deps": {"params.yaml": {"report.target_fnr": "modified"}}}],
              "split": [{"changed deps": {"data/prepared": "deleted"}}], "prepare": ["always changed"]}
    assert _stale_deps(status) == {"lt@red-0-level1": {"src/classprune/lottery/train.py": "modified"},
                                   "report": {"params.yaml": {"report.target_fnr": "modified"}}}


def test_the_committed_lock_matches_the_code_and_params():
    proc = subprocess.run([sys.executable, "-m", "dvc", "--wait-for-lock", "status", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout or "{}")
    stale = _stale_deps(status)
    assert not stale, (f"dvc.lock is stale for {len(stale)} stages (first: {next(iter(stale.items()))}); "
                       "rerun `make repro`, or `dvc commit` a change shown to be output-neutral")


def stale_lock_entries(root: Path, stages: list[str]) -> dict[str, list[str]]:
    """Per lock file: entries naming no stage of its dvc.yaml (``stages``: `dvc stage list --all` names)."""
    defined: dict[str, set[str]] = {}
    for name in stages:
        file, _, short = name.rpartition(":")
        lock = str(Path(file).parent / "dvc.lock") if file else "dvc.lock"
        defined.setdefault(lock, set()).add(short)
    from classprune.pipelines import lock_files

    out = {}
    for lock in lock_files(root):
        rel = lock.relative_to(root).as_posix()
        extra = sorted(set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) - defined.get(rel, set()))
        if extra:
            out[rel] = extra
    return out


def test_every_lock_entry_is_a_stage_and_every_seed_has_its_pipeline():
    """DVC keeps lock entries of stages that no longer exist (and parses and rewrites them around every
    stage it runs); the committed lock files hold only stages of the dvc.yaml beside them."""
    from classprune import pipelines

    proc = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--all", "--names-only"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stale = stale_lock_entries(ROOT, proc.stdout.split())
    assert not stale, {lock: f"{len(names)} stale entries, e.g. {names[:3]}" for lock, names in stale.items()}
    seeds = pipelines.run_seeds(ROOT)
    assert pipelines.mismatch(ROOT, seeds) is None, pipelines.mismatch(ROOT, seeds)
    assert all((ROOT / "pipelines" / f"seed_{s}" / "dvc.lock").is_file() for s in seeds)


def test_a_stale_lock_entry_is_found(tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"report": {}, "train@red-0": {}}}))
    (tmp_path / "pipelines" / "seed_0").mkdir(parents=True)
    (tmp_path / "pipelines" / "seed_0" / "dvc.lock").write_text(
        yaml.safe_dump({"schema": "2.0", "stages": {"lt@red-0-level0": {}, "evaluate@red-0-round1": {}}}))
    stages = ["report", "pipelines/seed_0/dvc.yaml:lt@red-0-level0"]
    assert stale_lock_entries(tmp_path, stages) == {"dvc.lock": ["train@red-0"],
                                                    "pipelines/seed_0/dvc.lock": ["evaluate@red-0-round1"]}


def _same_params_as_the_profile(arch: str, committed: Path, tmp_path: Path) -> None:
    """What ran is what `classprune profile ARCH` applies to today's params.yaml, section by section."""
    from classprune import profiles
    from classprune.config import load_params

    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profiles.merged_params(arch, ROOT / "params.yaml")))
    ran, profile = load_params(committed), load_params(tmp_path / "profile.yaml")
    for section in ("model", "data", "train", "prune", "run", "scenarios", "pretrain", "evaluate"):
        assert getattr(ran, section) == getattr(profile, section), (arch, section)


def test_the_per_network_table_is_made_from_the_committed_reports(tmp_path):
    """reports/archs/table.md, which the Results page includes, is what experiments/arch_table.py makes from the committed
    reports, and each network's copy says which profile, commit and params produced it, with every stage done."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import arch_table

    archs = [a for a, src in arch_table.SOURCES.items() if a != "alexnet" and (src / "metrics.json").is_file()]
    assert archs, "no network beyond AlexNet has committed results"
    for arch in archs:
        src = arch_table.SOURCES[arch]
        provenance = json.loads((src / "provenance.json").read_text())
        params = yaml.safe_load((src / "params.yaml").read_text())
        _same_params_as_the_profile(arch, src / "params.yaml", tmp_path)
        assert provenance["profile"] == params["profile"] == params["model"]["arch"] == arch
        assert provenance["dvc_status_after_run"] == "up to date", provenance["dvc_status_after_run"]
        metrics = json.loads((src / "metrics.json").read_text())
        for scenario in ("red", "black", "red-channel", "black-channel"):
            assert metrics[scenario]["round_1"]["n_seeds"] == len(params["run"]["seeds"]) >= 3, (arch, scenario)
    assert (ROOT / "reports" / "archs" / "table.md").read_text() == arch_table.markdown(arch_table.table())
