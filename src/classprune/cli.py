"""Command line: ``classprune <step>`` runs one pipeline step; stage scripts call ``run_stage``.

User errors print one line (``error: ...``) and exit with status 2; nothing half-written is left behind
because every step writes atomically.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable, Sequence

from .errors import ClassPruneError

# name -> pipeline function; arguments beyond ``params`` become required CLI options.
STEPS = ("prepare", "split", "cache", "init", "lt", "evaluate", "report", "baseline", "export")
COMMANDS = (*STEPS, "predict")
_FUNCS = {"lt": "lt_round", "evaluate": "evaluate_chain", "report": "report"}


def _resolve(step: str) -> Callable:
    from . import pipeline

    if step == "baseline":  # --- baselines (issue 6) ---
        from .baselines import run_baseline
        return run_baseline
    if step == "export":
        from .export import export_selection

        def export(params) -> dict:
            """Export each scenario's selected model (reports/selection.json) to models/export/<scenario>/."""
            return export_selection(params)
        return export
    if step == "report":
        from .config import Params
        from .report import write_reports

        def report(params: Params) -> None:
            agg = write_reports(params)
            _print_table(agg, params)
        return report
    return getattr(pipeline, _FUNCS.get(step, step))


def _print_table(agg, params) -> None:
    sub = agg[agg["split"] == params.report.split]
    cols = ["method", "round", "remaining", "auc", "accuracy", "fnr", "fpr"]
    print(sub[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _parser(step: str, fn: Callable) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"classprune {step}", description=(fn.__doc__ or "").split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, prm in inspect.signature(fn).parameters.items():
        if name == "params":
            continue
        flag = "--round" if name == "k" else f"--{name}"
        p.add_argument(flag, dest=name, required=True, type=int if prm.annotation in (int, "int") else str)
    return p


def run_step(step: str, argv: Sequence[str] | None = None) -> int:
    from .config import load_params

    fn = _resolve(step)
    args = vars(_parser(step, fn).parse_args(argv))
    try:
        params = load_params(args.pop("params"))
        if params.train.cpu_isa != "native":
            from .isa import check_pinned

            check_pinned(params.train.cpu_isa)
        result = fn(params, **args)
    except (ClassPruneError, ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, dict):
        print(json.dumps(result, default=str, sort_keys=True))
    elif result is not None:
        print(result)
    return 0


def _pin_isa(argv: Sequence[str]) -> None:
    """train.cpu_isa must take effect before torch is imported, so it is read before everything else."""
    from .isa import pin_cpu_isa, requested_isa

    argv = list(argv)
    params_path = argv[argv.index("--params") + 1] if "--params" in argv[:-1] else "params.yaml"
    pin_cpu_isa(requested_isa(params_path))


def run_stage(step: str) -> None:
    """Entry point of the scripts in stages/."""
    _pin_isa(sys.argv[1:])
    sys.exit(run_step(step, sys.argv[1:]))


def run_predict(argv: Sequence[str] | None = None) -> int:
    """``classprune predict``: score images with an exported model; one line per image."""
    p = argparse.ArgumentParser(prog="classprune predict",
                                description="Score images with an exported model (models/export/<scenario>).")
    p.add_argument("--model", required=True, help="export dir holding deploy.json and sparse_fp32.pt")
    p.add_argument("--images", required=True, help="a folder of images (or one image file)")
    a = p.parse_args(argv)
    from .export import predict, read_deploy

    try:
        info = read_deploy(a.model)
        results = predict(a.model, a.images)
    except (ClassPruneError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    positive = info.get("positive_class", "positive")
    for path, score, hit in results:
        print(f"{path}\t{score:.6f}\t{positive if hit else 'negative'}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: classprune {{{','.join(COMMANDS)}}} [--params PARAMS] [options]", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    if argv[0] == "predict":
        sys.exit(run_predict(argv[1:]))
    _pin_isa(argv[1:])
    sys.exit(run_step(argv[0], argv[1:]))


if __name__ == "__main__":
    main()
