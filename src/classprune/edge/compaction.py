"""A channel ticket shipped physically smaller: its pruned channels removed, exported to ONNX fp32 and int8.

A channel checkpoint is full-shape with whole channels at zero (the artifact contract): a runtime multiplies
those zeros like any weight, so the device gains only when they are gone. Torch-Pruning's DependencyGraph
(:func:`classprune.lottery.channels.compact`) removes them; the compact network's logits are checked against the
masked network's before anything is written, and its files are evaluated as shipped like the weight
export's (:func:`classprune.edge.export.ship_files`). Channel counts are kept as pruned, not rounded up to
multiples of 8 or 16 (not measured faster here).

``models/export_channel/<scenario>/`` (written atomically): ``model.onnx`` (compact, fp32), ``model_int8.onnx``
(compact, static QDQ int8 calibrated on the weight export's images), ``deploy.json`` (``granularity:
channel``, the compact and dense MACs and parameters, channels kept per conv layer, the source checkpoint,
the weight export's preprocessing keys, one entry per file). A scenario whose channel ticket met no FN
budget gets only ``index.json`` saying so. The stage's table: ``reports/export_channel/<scenario>.{csv,md,json}``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import io
from ..errors import CheckpointError, DataError, ExportError, first_line
from ..paths import CACHE
from .export import (cache_meta, calibration, check_threshold, deploy_info, int8_nodes,
                     positive_class_of, read_selection, ship_files)
from .onnx_files import FILES, export_onnx

SELECTION_CHANNEL = Path("reports/selection_channel.json")
EXPORT_CHANNEL_DIR = Path("models/export_channel")
TABLES = Path("reports/export_channel")
INDEX_FILE = "index.json"
PRECISIONS = ("fp32", "int8")  # a compact network is dense: no sparse-stored files; fp16 is not asked for
TOLERANCE = 1e-5  # max |compact logits - masked logits| on the probe images


def load_ticket(params, weights: str | Path, mask_path: str | Path, seed: int = 0):
    """(masked network in eval mode, mask, channel units) of a channel checkpoint. Refused with one line: a
    checkpoint that is not the network's, one whose pruned entries are not exactly zero (it would not be
    the network that was evaluated), a mask that is not a channel mask of ``prune.channel.layers``."""
    from ..lottery.channels import full_channel_mask
    from ..lottery.runner import build, channel_units
    from ..lottery.masks import load_mask

    state, mask = io.load_torch(weights), load_mask(mask_path)
    if not isinstance(state, dict) or not set(mask) <= set(state):
        raise CheckpointError(f"{weights} does not hold the tensors named in {mask_path}")
    bad = next((n for n, m in mask.items() if m.shape != state[n].shape or state[n][~m].any()), None)
    if bad is not None:
        raise CheckpointError(f"{weights}: {bad} is not exactly zero where {mask_path} prunes it "
                              "(or their shapes differ)")
    try:
        model = build(params, seed, state).eval()
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{weights} is not a checkpoint of the network: {first_line(exc)[:200]}") from None
    units = channel_units(params, model)
    expected = set(full_channel_mask(model, units))
    if set(mask) != expected:
        raise CheckpointError(f"{mask_path} is not a channel mask of prune.channel.layers (it names "
                              f"{len(mask)} tensors, the channel units {len(expected)})")
    return model, mask, units


def compact_checked(model: nn.Module, mask: Mapping[str, torch.Tensor], units: Sequence, image_size: int,
                    probe: torch.Tensor) -> tuple[nn.Module, float]:
    """Torch-Pruning's compact network and the largest logit difference to the masked one on ``probe``;
    above :data:`TOLERANCE` (or NaN) it is not the ticket, and nothing may ship."""
    from ..lottery.channels import compact

    small = compact(model, mask, units, image_size).eval()
    with torch.no_grad():
        diff = float((model(probe) - small(probe)).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(f"the compact network's logits differ from the masked network's by {diff:.3g} "
                          f"(> {TOLERANCE:g}) on {len(probe)} images; not exported")
    return small, diff


def channels_kept(mask: Mapping[str, torch.Tensor], units: Sequence) -> dict[str, list[int]]:
    """{conv layer: [channels kept, channels of the dense layer]}."""
    from ..lottery.channels import alive

    live = alive(mask, units)
    return {u.layer: [int(live[u.layer].sum()), int(u.size)] for u in units}


def write_compact(out: Path, params, entry: Mapping[str, Any], meta: Mapping[str, Any], scenario: str,
                  cache_dir: Path) -> tuple[dict[str, Any], list[dict]]:
    """The compact fp32 and int8 files of one selected channel checkpoint in ``out``, evaluated as shipped;
    (deploy info, export-table rows)."""
    from ..lottery.channels import macs_and_params
    from ..lottery.masks import remaining
    from ..paths import chain

    threshold = check_threshold(scenario, entry["threshold"])
    model, mask, units = load_ticket(params, entry["weights"], entry["mask"], int(entry["seed"]))
    calib = calibration(params, cache_dir)  # real images of both classes: the probe and int8's calibration
    size = int(meta["image_size"])
    small, diff = compact_checked(model, mask, units, size, torch.from_numpy(calib[0]))
    (macs, n), (dense_macs, dense_n) = macs_and_params(small, size), macs_and_params(model, size)
    nonzero = sum(int(torch.count_nonzero(p)) for p in small.parameters())
    info = deploy_info(meta, threshold, positive_class_of(params), scenario=scenario, seed=int(entry["seed"]),
                       k=int(entry["round"]), weights=str(entry["weights"]), mask_path=str(entry["mask"]),
                       remaining=remaining(mask), nonzero=nonzero)
    info.update({"granularity": "channel", "chain": chain(scenario, "channel"), "files": {"onnx": FILES["fp32"]},
                 "macs": macs, "params": n, "dense_macs": dense_macs, "dense_params": dense_n,
                 "macs_ratio": macs / dense_macs, "params_ratio": n / dense_n,
                 "channels": channels_kept(mask, units),
                 "compact_check": {"max_abs_logit_diff": diff, "tolerance": TOLERANCE, "images": len(calib[0])}})
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(small, size, out / FILES["fp32"], info)
    fp32_nodes = {"fp32": [], **int8_nodes(out, params, calib)}  # calibrated as the weight export's int8
    row = {"scenario": scenario, "seed": info["seed"], "round": info["round"], "remaining": info["remaining"],
           "nonzero": nonzero}
    return info, ship_files(out, info, params, cache_dir, row, fp32_nodes)


def compact_markdown(info: Mapping[str, Any] | None, scenario: str) -> str:
    """The compact network's cost beside the dense network's, for reports/export_channel/<scenario>.md."""
    lines = ["## The compact network (channel ticket, pruned channels removed by Torch-Pruning)", "",
             "| scenario | round | channels kept per conv layer | MACs | dense MACs | MACs / dense | params "
             "| dense params | params / dense |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    if info is None:
        return "\n".join(lines + [f"| {scenario} (nothing exported) | | | | | | | | |"]) + "\n"
    kept = ", ".join(f"{layer} {k}/{d}" for layer, (k, d) in info["channels"].items())
    lines.append(f"| {scenario} | {info['round']} | {kept} | {info['macs']:,} | {info['dense_macs']:,} "
                 f"| {100 * info['macs_ratio']:.2f} % | {info['params']:,} | {info['dense_params']:,} "
                 f"| {100 * info['params_ratio']:.2f} % |")
    return "\n".join(lines) + "\n"


def export_channel(params, scenario: str, selection: str | Path = SELECTION_CHANNEL,
                   cache_dir: str | Path = CACHE, out_root: str | Path = EXPORT_CHANNEL_DIR,
                   tables: str | Path = TABLES) -> dict[str, Any]:
    """The export_ch stage: one scenario's selected channel ticket, compacted, as ONNX fp32 and int8."""
    from . import shipped

    sel, cache_dir = read_selection(selection), Path(cache_dir)
    if scenario not in sel:
        raise DataError(f"{selection} has no entry for {scenario}; rerun the report stage with {scenario} "
                        "in run.channel_scenarios")
    entry = sel[scenario]
    if entry is not None and entry.get("granularity", "channel") != "channel":
        raise DataError(f"{selection}: {scenario} is a {entry['granularity']} ticket, not a channel ticket")
    meta = cache_meta(cache_dir)
    out, tables = Path(out_root) / scenario, Path(tables)
    info, rows = None, []
    with io.atomic_path(out, is_dir=True) as tmp:  # nothing is left behind unless everything succeeded
        if entry is None:
            why = f"no level of {scenario}'s channel ticket met the FN budget"
            print(f"export_ch: {scenario}: {why}, nothing exported")
            tmp.mkdir(parents=True, exist_ok=True)
            (tmp / INDEX_FILE).write_text(json.dumps({"scenario": scenario, "exported": False, "why": why},
                                                     indent=2, sort_keys=True) + "\n")
        else:
            info, rows = write_compact(tmp, params, entry, meta, scenario, cache_dir)
        metrics = shipped.metrics_tree(rows)
        if info is not None:
            metrics[scenario]["compact"] = {k: info[k] for k in ("macs", "params", "macs_ratio", "params_ratio")}
        shipped.write_csv(rows, tables / f"{scenario}.csv")
        io.write_json(tables / f"{scenario}.json", metrics)
        io.write_text(tables / f"{scenario}.md", shipped.markdown(rows, params.evaluate, [] if info else [scenario])
                      + "\n" + compact_markdown(info, scenario))
    shipped_files = [r["file"] for r in rows if r["shipped"]]
    return {"scenario": scenario, "exported": info is not None, "dir": str(out), "shipped": shipped_files,
            **({k: info[k] for k in ("macs", "dense_macs", "params", "dense_params")} if info else {})}
