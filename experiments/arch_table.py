"""The paper's effect per network, in one table from each network's committed reports.

Inputs: ``reports/`` for AlexNet (the default profile, 5 seeds) and ``reports/archs/<arch>/`` for the others:
copies of the report stage's files and of ``benchmarks/bench_channels.py``'s latency table from a run of
``classprune profile <arch>`` (``provenance.json`` there says which commit and params). Per network and
granularity (weight / channel ticket), for red and black:

* the dense (round 1) test AUC, FNR and FPR at argmax, means with 95 % CI over seeds;
* the FN-budget level the report chose on val for black, and red's at the same level: remaining weights,
  test AUC / FNR / FPR, and the seeds whose model is constant (a collapse);
* the paired black - red difference there (test split, paired by seed): ΔFNR and ΔAUC with their CIs;
* for channel tickets, each scenario's ticket against its random reinit control (open_lth's
  randomly_reinitialize: the same mask, fresh weights), paired by seed: ΔAUC and ΔFNR;
* for channel tickets the compact network's MACs and parameters, and the batch-1 latency of its fp32 and
  int8 ONNX files against the dense fp32 file (onnxruntime, 1 thread, this machine).

    python experiments/arch_table.py        # writes reports/archs/table.md and prints it
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "archs" / "table.md"
SOURCES = {"alexnet": ROOT / "reports", "resnet18": ROOT / "reports" / "archs" / "resnet18",
           "mobilenet_v2": ROOT / "reports" / "archs" / "mobilenet_v2"}


def _pm(m: dict, key: str) -> str:
    return f"{m[key]:.3f} ± {m[f'{key}_ci95']:.3f}" if m.get(key) is not None else "n/a"


def _paired(row: pd.Series | None) -> str:
    if row is None:
        return "n/a"
    cells = []
    for key in ("fnr", "auc"):
        text = f"{row[f'd_{key}']:+.3f} ± {row[f'd_{key}_ci95']:.3f}"
        cells.append(f"**{text}**" if bool(row[f"d_{key}_excludes_0"]) else text)
    return " | ".join(cells)


def _latency(src: Path, export: str) -> dict[str, float]:
    """{precision: batch-1 ms} of a channel export, and of the dense fp32 reference, at 1 thread."""
    path = src / "channel_latency.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    df = df[df["threads"] == 1]
    out = {f"dense_{r.precision}": r.batch1_ms for r in df[df["source"] == "dense"].itertuples()}
    out.update({r.precision: r.batch1_ms for r in df[df["source"] == f"export {export}"].itertuples()})
    return out


def rows(arch: str, src: Path) -> list[dict]:
    metrics = json.loads((src / "metrics.json").read_text())
    out = []
    for gran, sel_file, suffix in (("weight", "selection.json", ""), ("channel", "selection_channel.json", "-channel")):
        if not (src / sel_file).is_file() or f"black{suffix}" not in metrics:
            continue
        sel = json.loads((src / sel_file).read_text()).get("black")
        if gran == "weight":
            paired = pd.read_csv(src / "paired_differences.csv")
            paired = paired[paired["method"] == "black"]
        else:
            channel = pd.read_csv(src / "paired_channel.csv")
            channel = channel[channel["split"] == "test"]
            paired = channel[(channel["comparison"] == "vs red") & (channel["method"] == "black-channel")]
        for k in ([1, sel["round"]] if sel else [1]):
            p = paired[paired["round"] == k]
            row = {"arch": arch, "granularity": gran, "level": "dense" if k == 1 else f"FN budget (round {k})",
                   "paired": _paired(p.iloc[0] if len(p) else None)}
            for sc in ("red", "black"):
                m = metrics[f"{sc}{suffix}"][f"round_{k}"]
                row[sc] = m
            row["seeds"] = row["black"]["n_seeds"]
            if gran == "channel" and k > 1:
                shipped = src / "export_channel" / "black.json"
                compact = json.loads(shipped.read_text())["black"].get("compact", {}) if shipped.is_file() else {}
                row["cost"] = {**sel, **compact}
                row["latency"] = _latency(src, "black")
                for sc in ("red", "black"):
                    p = channel[(channel["comparison"] == "vs reinit") & (channel["method"] == f"{sc}-channel")
                                & (channel["round"] == k)]
                    row[f"reinit_{sc}"] = _paired(p.iloc[0] if len(p) else None)
            out.append(row)
        if sel is None:
            out.append({"arch": arch, "granularity": gran, "level": "FN budget: no level qualified"})
    return out


WEIGHTS = ("| network | ticket | seeds | level | remaining % | red AUC | black AUC | red FNR | black FNR | black FPR | "
           "const red / black | ΔFNR black - red | ΔAUC black - red |\n"
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
CONTROL = ("| network | level | red ΔFNR ticket - reinit | red ΔAUC ticket - reinit | black ΔFNR ticket - reinit | "
           "black ΔAUC ticket - reinit |\n|---|---|---:|---:|---:|---:|")
COST = ("| network | compact MACs (of dense) | params (of dense) | fp32 batch 1 ms (dense fp32) | "
        "int8 batch 1 ms (dense int8) |\n|---|---:|---:|---:|---:|")


def _ms(latency: dict, key: str) -> str:
    return f"{latency[key]:.2f}" if key in latency else "n/a"


def _share(cost: dict, key: str) -> str:
    return f" ({100 * cost[f'{key}_ratio']:.2f} %)" if f"{key}_ratio" in cost else ""


def markdown(table: list[dict]) -> str:
    lines, control, cost = [WEIGHTS], [CONTROL], [COST]
    for r in table:
        if "black" not in r:
            lines.append(f"| {r['arch']} | {r['granularity']} | | {r['level']} | | | | | | | | | |")
            continue
        red, black = r["red"], r["black"]
        lines.append(f"| {r['arch']} | {r['granularity']} | {r['seeds']} | {r['level']} | "
                     f"{100 * black['remaining']:.2f} | {_pm(red, 'auc')} | {_pm(black, 'auc')} | {_pm(red, 'fnr')} | "
                     f"{_pm(black, 'fnr')} | {_pm(black, 'fpr')} | {red['n_constant']} / {black['n_constant']} | "
                     f"{r['paired']} |")
        if "cost" in r:
            c, lat = r["cost"], r.get("latency", {})
            control.append(f"| {r['arch']} | {r['level']} | {r['reinit_red']} | {r['reinit_black']} |")
            cost.append(f"| {r['arch']} | {c['macs']:,}{_share(c, 'macs')} | {c['params']:,}{_share(c, 'params')} | "
                        f"{_ms(lat, 'fp32')} ({_ms(lat, 'dense_fp32')}) | {_ms(lat, 'int8')} ({_ms(lat, 'dense_int8')}) |")
    parts = [lines] + ([control, cost] if len(cost) > 1 else [])
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def table() -> list[dict]:
    """Rows of every network with committed reports."""
    return [r for arch, src in SOURCES.items() if (src / "metrics.json").is_file() for r in rows(arch, src)]


def main() -> int:
    text = markdown(table())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
