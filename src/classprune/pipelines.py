"""One DVC pipeline file per seed: ``pipelines/seed_<s>/`` follows ``run.seeds``.

DVC reads and rewrites a stage's whole lock file around every stage it runs, under its repository lock. With
every seed in one dvc.yaml that bookkeeping grows with the study; with one dvc.yaml (and dvc.lock) per seed
it stays the size of one seed's stages. DVC's templating cannot make files from a list and has no include, so this module
does: ``pipelines/seed_<s>/dvc.yaml`` is ``pipelines/seed.dvc.yaml`` (the one definition to edit) with the
seed filled in. A copy, not a link: DVC reads other revisions through git, where a link is only its target's
name (`dvc metrics diff` and `dvc exp show` would fail on it). A seed taken out of run.seeds loses its
directory, lock file included (its outputs stay in DVC's cache and run cache, so putting the seed back
restores them).

Plumbing: no torch, no DVC; it changes which stages exist, never what a stage computes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .io import write_text

PIPELINES = Path("pipelines")
TEMPLATE = "seed.dvc.yaml"


def seed_dir(seed: int) -> Path:
    return PIPELINES / f"seed_{seed}"


def stage_file(seed: int) -> Path:
    """The seed's dvc.yaml, relative to the project root: its stages are addressed as ``<file>:<name>``."""
    return seed_dir(seed) / "dvc.yaml"


def run_seeds(root: Path | str = ".") -> list[int]:
    """run.seeds of the project's params.yaml (read without validating the rest)."""
    import yaml

    return [int(s) for s in (yaml.safe_load((Path(root) / "params.yaml").read_text()) or {})["run"]["seeds"]]


def lock_files(root: Path | str = ".") -> list[Path]:
    """Every lock file of the project: dvc.lock, then pipelines/seed_<s>/dvc.lock."""
    return [Path(root) / "dvc.lock", *sorted((Path(root) / PIPELINES).glob("seed_*/dvc.lock"))]


def present(root: Path | str = ".") -> list[int]:
    """Seeds that have a pipeline directory now."""
    base = Path(root) / PIPELINES
    out = []
    for d in base.glob("seed_*"):
        suffix = d.name.removeprefix("seed_")
        if d.is_dir() and suffix.isdigit() and (d / "dvc.yaml").exists():
            out.append(int(suffix))
    return sorted(out)


SEED_VAR = "  - seed: [SEED]"


def render(root: Path | str, seed: int, text: str | None = None) -> str:
    """Seed ``seed``'s dvc.yaml: the template (``text``, else read from ``root``) with its seed."""
    text = (Path(root) / PIPELINES / TEMPLATE).read_text() if text is None else text
    if SEED_VAR not in text:
        raise ValueError(f"{PIPELINES / TEMPLATE} lacks the line {SEED_VAR.strip()!r} under vars:")
    return (f"# Made by `classprune seeds` from ../{TEMPLATE} for seed {seed} of run.seeds: edit that file.\n"
            + text.replace(SEED_VAR, SEED_VAR.replace("SEED", str(seed)), 1))


def sync(root: Path | str, seeds: list[int]) -> dict[int, bytes | None]:
    """Make ``pipelines/`` hold exactly the seeds of ``seeds``; returns the removed seeds' dvc.lock bytes.

    Idempotent: files already right are not touched (their mtimes stay, so DVC sees nothing new).
    """
    base = Path(root) / PIPELINES
    if not (base / TEMPLATE).is_file():
        raise FileNotFoundError(f"{base / TEMPLATE} is missing: the per-seed stage definitions")
    removed: dict[int, bytes | None] = {}
    for seed in present(root):
        if seed not in seeds:
            lock = Path(root) / seed_dir(seed) / "dvc.lock"
            removed[seed] = lock.read_bytes() if lock.is_file() else None
            shutil.rmtree(lock.parent)
    template = (base / TEMPLATE).read_text()
    for seed in seeds:
        text = render(root, seed, template)
        path = Path(root) / stage_file(seed)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text)   # atomic: a DVC process never reads half a file
    return removed


def restore(root: Path | str, removed: dict[int, bytes | None]) -> None:
    """Undo ``sync``'s removals (the fan-out's seeds are temporary): directories and lock files back."""
    sync(root, sorted(set(present(root)) | set(removed)))
    for seed, lock in removed.items():
        if lock is not None:
            (Path(root) / seed_dir(seed) / "dvc.lock").write_bytes(lock)


def mismatch(root: Path | str, seeds: list[int]) -> str | None:
    """One line when ``pipelines/`` does not hold exactly ``seeds``, each as the template says, else None."""
    have = present(root)
    fix = "run `classprune seeds` (make repro and classprune run do it)"
    if have != sorted(seeds):
        return f"pipelines/ holds seeds {have} but run.seeds is {sorted(seeds)}: {fix}"
    template = (Path(root) / PIPELINES / TEMPLATE).read_text()
    stale = [s for s in seeds if (Path(root) / stage_file(s)).read_text() != render(root, s, template)]
    if stale:
        return f"pipelines/seed_{stale[0]}/dvc.yaml differs from pipelines/{TEMPLATE}: {fix}"
    return None
