"""What the stages before `export` leave behind, made small and real: image files, their split manifest, the
decoded cache built from them, a pruned round's checkpoint and mask, and the report's selection.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from classprune.data.cache import build_cache
from classprune.data.synthetic import render
from classprune.lottery.masks import full_mask, save_mask
from classprune.models.network import build_model
from classprune.lottery.pruning import keep_top

ROOT = Path(__file__).resolve().parents[1]

THRESHOLD = 0.42
COUNTS = {"train": 16, "val": 20, "test": 20}  # images per class and split


# One live path through the network (channel 0 of every layer) that scores an image by its darkness near a
# crack-like line: val AUC about 0.65 on the synthetic images, where a random network pruned to 1.56 % is dead
# (one score for every image, which the export rightly refuses to ship).
LIVE_PATH = {"features.0.weight": [(0, c, 5, 5, -1.0) for c in range(3)], "features.3.weight": [(0, 0, 2, 2, 1.0)],
             "features.6.weight": [(0, 0, 1, 1, 1.0)], "features.8.weight": [(0, 0, 1, 1, 1.0)],
             "features.10.weight": [(0, 0, 1, 1, 1.0)], "classifier.1.weight": [(0, 0, 1.0)],
             "classifier.4.weight": [(0, 0, 1.0)], "classifier.6.weight": [(1, 0, 0.05), (0, 0, -0.05)]}


def pruned_round(root: Path, keep: float, seed: int = 0) -> tuple[Path, Path]:
    """A checkpoint as a train stage leaves it: trained-looking weights, zero where the mask prunes."""
    model = build_model(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    state = {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in model.state_dict().items()}
    mask = keep_top({n: state[n].abs() for n in full_mask(model)}, full_mask(model), keep)
    for name, entries in LIVE_PATH.items():
        for *idx, value in entries:
            state[name][tuple(idx)] = value
            mask[name][tuple(idx)] = True
        bias = name.replace("weight", "bias")
        state[bias][[e[0] for e in entries]] = 0.0
        if bias in mask:
            mask[bias][[e[0] for e in entries]] = False
    state["classifier.6.bias"] = torch.tensor([0.5, -0.5])  # log-odds of a few units around 0: scores spread
    mask["classifier.6.bias"] = torch.ones(2, dtype=torch.bool)
    state = {n: t * mask[n] for n, t in state.items()}
    root.mkdir(parents=True, exist_ok=True)
    torch.save(state, root / "weights.pt")
    save_mask(mask, root / "mask.pt")
    return root / "weights.pt", root / "mask.pt"


def write_images_and_cache(proj: Path) -> dict:
    """PNG files of both classes per split, data/splits/manifest.csv (paths relative to ``proj``), data/cache."""
    rows = []
    for split, n in COUNTS.items():
        for label in (0, 1):
            folder = proj / "data/prepared/synthetic" / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                index = i + 1000 * ("train", "val", "test").index(split)
                path = folder / f"{i:03d}.png"
                Image.fromarray(render(64, 7, label, index)).save(path)
                rows.append({"path": str(path.relative_to(proj)), "label": label, "split": split})
    manifest = pd.DataFrame(rows)
    (proj / "data/splits").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(proj / "data/splits/manifest.csv", index=False)
    absolute = manifest.assign(path=[str(proj / p) for p in manifest["path"]])
    return build_cache(absolute, proj / "data/cache", 64, workers=1)


def write_export_inputs(proj: Path, keep: float = 0.015625) -> dict:
    """Everything `stages/export.py` reads; returns the cache's meta."""
    meta = write_images_and_cache(proj)
    pruned_round(proj / "models/black/round_7", keep)
    (proj / "reports").mkdir(exist_ok=True)
    sel = {"black": {"seed": 0, "round": 7, "remaining": keep, "weights": "models/black/round_7/weights.pt",
                     "mask": "models/black/round_7/mask.pt", "threshold": THRESHOLD}, "red": None}
    (proj / "reports/selection.json").write_text(json.dumps(sel))
    return meta


def run_in(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    """A command in a project copy, with this checkout's package and this interpreter's tools first."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "OMP_NUM_THREADS": "1"}
    env["PATH"] = str(Path(sys.executable).parent) + ":" + env.get("PATH", "")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def exported_project(dest: Path) -> tuple[Path, str]:
    """A git + DVC copy of the project where the export stage's script ran on write_export_inputs; its stdout."""
    from _project import make_project

    proj = make_project(dest)
    write_export_inputs(proj)
    proc = run_in(proj, sys.executable, "stages/export.py")
    assert proc.returncode == 0, proc.stderr
    return proj, proc.stdout


def split_misses(project: Path, predict_stdout: str) -> tuple[int, int]:
    """(false negatives, false positives) of `classprune predict --split test` output (path, score, decision
    per line) against the manifest's labels; every test image must be scored exactly once."""
    import csv

    labels = {r["path"]: int(r["label"]) for r in csv.DictReader((project / "data/splits/manifest.csv").open())
              if r["split"] == "test"}
    decided = {path: d != "negative" for path, _, d in (ln.split("\t") for ln in predict_stdout.strip().splitlines())}
    assert set(decided) == set(labels)
    return (sum(labels[p] == 1 and not hit for p, hit in decided.items()),
            sum(labels[p] == 0 and hit for p, hit in decided.items()))
