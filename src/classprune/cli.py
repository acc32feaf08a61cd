"""Command line: ``classprune COMMAND``: the whole pipeline (``run``), one step, or a profile.

Stage scripts call :func:`run_stage`; ``classprune run`` starts the Prefect fan-out flow over the DVC pipeline;
commands register in ``COMMANDS``. User errors print one line (``error: ...``), exit 2; steps write atomically.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from .errors import ClassPruneError

# The pipeline's steps: name -> (help, "module:function"); arguments beyond ``params`` are CLI options (k: --round)
STEPS: dict[str, tuple[str, str]] = {
    "prepare": ("index the dataset (or generate the synthetic one)", "data.steps:prepare"),
    "split": ("imbalanced, stratified train/val/test split", "data.steps:split"),
    "cache": ("decode and resize every image once into data/cache", "data.steps:cache"),
    "pretrain": ("W0's conv features learned once on the synthetic source task", "models.pretrain:pretrain"),
    "init": ("W0 and the full mask of a scenario and seed (round 0)", "lottery.runner:init"),
    "lt": ("one lottery-ticket round k: prune round k-1, rewind, train", "lottery.runner:train_round"),
    "evaluate": ("AUC-ROC, accuracy, FNR, FPR of every round of a chain", "evaluation.evaluate:evaluate_chain"),
    "lt_ch": ("a channel ticket: every round (prune channels, rewind, train), one process", "lottery.runner:run_channel_chain"),
    "eval_ch": ("every round of a channel ticket, with MACs and parameters", "evaluation.evaluate:evaluate_channel_chain"),
    "reinit": ("the channel ticket's random-reinit control (Liu et al.)", "lottery.reinit:reinit_channel"),
    "report": ("means, CIs, paired differences, FN budget, figures", "reporting.report:report"),
    "baseline": ("a comparison method (SNIP, L-OBS, MobileNet), 1 seed", "baselines.common:run_baseline"),
    "export": ("the chosen models as sparse + ONNX files for a device", "edge.export:export_selection"),
    "export_ch": ("a channel ticket compacted (Torch-Pruning) as ONNX fp32 + int8", "edge.compaction:export_channel"),
    "verdicts": ("the declared claims tested on every network's rounds", "evidence.report:write_verdicts"),
}


def _resolve(step: str) -> Callable:
    from importlib import import_module

    module, func = STEPS[step][1].split(":")
    return getattr(import_module(f"{__package__}.{module}"), func)


def _parser(step: str, fn: Callable) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"classprune {step}", description=(fn.__doc__ or "").split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, prm in inspect.signature(fn).parameters.items():
        if name == "params" or prm.default is not inspect.Parameter.empty:
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
        started = time.process_time()
        result = fn(params, **args)
        _log_timing(step, argv, started)
        _log_modules(step, argv)
    except (ClassPruneError, ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, dict):
        print(json.dumps(result, default=str, sort_keys=True))
    elif result is not None:
        print(result)
    return 0


def _log_timing(step: str, argv: Sequence[str] | None, started: float) -> None:
    """With CLASSPRUNE_TIMING_LOG set (make bench), append this stage's CPU seconds before the step (the
    interpreter and its imports: start-up) and inside it (compute, its loader workers included) as one line."""
    path = os.environ.get("CLASSPRUNE_TIMING_LOG")
    if not path:
        return
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    line = json.dumps({"step": step, "argv": list(argv or []), "startup_cpu_s": started, "compute_cpu_s": cpu - started})
    with open(path, "a") as f:  # one short append per stage: whole lines even with parallel stages
        f.write(line + "\n")


def _log_modules(step: str, argv: Sequence[str] | None) -> None:
    """With CLASSPRUNE_MODULES_LOG set (the stage-deps test), append the project source files this step
    loaded, relative to the project root, as one line: what its DVC stage must list as deps."""
    path = os.environ.get("CLASSPRUNE_MODULES_LOG")
    if not path:
        return
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = sorted({os.path.relpath(f, root) for m in list(sys.modules.values())
                    if (f := getattr(m, "__file__", None)) and os.path.abspath(f).startswith(os.path.join(root, "src", ""))})
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "argv": list(argv or []), "files": files}) + "\n")


def _pin_isa(argv: Sequence[str]) -> None:
    """train.cpu_isa must take effect before torch is imported, so it is read before everything else."""
    from .isa import pin_cpu_isa, requested_isa

    argv = list(argv)
    params_path = argv[argv.index("--params") + 1] if "--params" in argv[:-1] else "params.yaml"
    pin_cpu_isa(requested_isa(params_path))


def run_stage(step: str) -> None:
    """Entry point of the scripts in stages/."""
    _pin_isa(sys.argv[1:])
    _exit(run_step(step, sys.argv[1:]))


def _exit(status: int) -> None:
    """Leave without the interpreter's teardown, which costs about 1 CPU-s once torch is imported, paid by
    every one of a pipeline's stages. Every output is already written and closed (atomic writes). A child
    still alive (a DataLoader worker) would hold the caller's pipe open, so then the normal exit is taken."""
    import gc
    import logging
    import multiprocessing

    gc.collect()  # loader iterators caught in reference cycles shut their workers down when collected
    if multiprocessing.active_children():
        sys.exit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_predict(argv: Sequence[str] | None = None) -> int:
    """``classprune predict``: score images with an export (models/export[_channel]/NAME), one line each."""
    from .edge.predict import PRECISIONS, predict, read_deploy, resolve_model, split_images

    p = argparse.ArgumentParser(prog="classprune predict", description=run_predict.__doc__.split(": ", 1)[1])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="export dir holding deploy.json and the model files")
    where.add_argument("--scenario", help="the export of this scenario, of --granularity (default weight)")
    p.add_argument("--granularity", help="weight or channel (compact: fp32, int8 only); --model's must match")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (or one image file)")
    src.add_argument("--split", help="the images of one split of --manifest (train, val, test)")
    p.add_argument("--manifest", default="data/splits/manifest.csv", help="the pipeline's split manifest")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="which ONNX file (default fp32)")
    p.add_argument("--sparse", action="store_true", help="the file with sparse initializers (same scores)")
    p.add_argument("--runtime", choices=("onnx", "torch"), default="onnx",
                   help="onnx: the ONNX file in onnxruntime (the device's path); torch: sparse_fp32.pt in PyTorch")
    a = p.parse_args(argv)
    try:
        info = read_deploy(model := resolve_model(a.model, a.scenario, a.granularity))
        images = split_images(a.split, a.manifest) if a.split else a.images
        results = predict(model, images, precision=a.precision, sparse=a.sparse, runtime=a.runtime,
                          granularity=a.granularity)
    except (ClassPruneError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, score, hit in results:
        print(f"{path}\t{score:.6f}\t{info.get('positive_class', 'positive') if hit else 'negative'}")
    return 0


def run_pipeline(argv: Sequence[str]) -> int:
    """``classprune run [--repo DIR] [flows.fanout options]``: the whole pipeline as the Prefect fan-out flow.

    The flows live beside dvc.yaml in the project repository, not in the installed package, so the flow
    runs as ``python -m flows.fanout`` in that repository with this interpreter.
    """
    p = argparse.ArgumentParser(prog="classprune run", add_help=False)
    p.add_argument("--repo", default=".")
    a, rest = p.parse_known_args(argv)
    repo = os.path.abspath(a.repo)
    if not (os.path.isfile(os.path.join(repo, "dvc.yaml")) and os.path.isfile(os.path.join(repo, "flows", "fanout.py"))):
        print(f"error: {repo} is not the classprune project (no dvc.yaml and flows/fanout.py); "
              "run it in the repository or pass --repo", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("PREFECT_HOME", os.path.join(repo, ".prefect"))
    return subprocess.call([sys.executable, "-m", "flows.fanout", "--repo", repo, *rest], cwd=repo, env=env)


def run_seeds(argv: Sequence[str]) -> int:
    """``classprune seeds``: make ``pipelines/seed_<s>/`` (one DVC pipeline file per seed) follow run.seeds."""
    import yaml

    from . import pipelines

    p = argparse.ArgumentParser(prog="classprune seeds", description=run_seeds.__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--check", action="store_true", help="only say whether they follow it (exit 1 if not)")
    a = p.parse_args(argv)
    root = os.path.dirname(os.path.abspath(a.params))
    try:
        seeds = [int(s) for s in (yaml.safe_load(open(a.params)) or {})["run"]["seeds"]]
        if a.check:
            line = pipelines.mismatch(root, seeds)
            print(line or f"pipelines/ holds seeds {seeds}, as run.seeds")
            return 1 if line else 0
        removed = pipelines.sync(root, seeds)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pipelines/ holds seeds {seeds}" + (f" (removed {sorted(removed)})" if removed else ""))
    return 0


def run_profile(argv: Sequence[str]) -> int:
    """``classprune profile NAME``: show, run as a DVC experiment (--exp) or write (--write) a profile overlay."""
    import shlex

    from . import profiles

    p = argparse.ArgumentParser(prog="classprune profile", description=run_profile.__doc__.split("\n")[0])
    p.add_argument("name", help="profiles/NAME.yaml (tiny, paper, isic) or a path to an overlay file")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--exp", action="store_true",
                     help="run it as a DVC experiment: dvc exp run -S key=value ... (extra options go to dvc)")
    how.add_argument("--write", action="store_true",
                     help="overwrite the params file with the profile applied (comments kept)")
    a, dvc_args = p.parse_known_args(argv)
    if dvc_args and not a.exp:
        p.error(f"unrecognized arguments: {' '.join(dvc_args)}")
    try:
        overlay = profiles.load_overlay(a.name)
        import yaml

        base = yaml.safe_load(open(a.params).read())
        profiles.check_keys(base, overlay, a.name)
        if a.write:
            n = profiles.apply_to_file(a.name, a.params)
            print(f"{a.params} overwritten with profile {a.name} ({n} keys); `git checkout {a.params}` restores it")
            return 0
    except (profiles.ProfileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmd = ["dvc", "exp", "run", *profiles.set_args(overlay, base), *dvc_args]
    if a.exp:
        seeds = (overlay.get("run") or {}).get("seeds")
        if seeds is not None:   # DVC cannot make files: the per-seed pipeline files follow the profile's seeds
            from . import pipelines

            pipelines.sync(os.path.dirname(os.path.abspath(a.params)), [int(s) for s in seeds])
            print(f"pipelines/ now holds seeds {seeds} (the profile's run.seeds); "
                  "`git checkout pipelines params.yaml` brings the committed ones back", file=sys.stderr)
        return subprocess.call(cmd)
    for key, value in profiles.flatten(overlay, base=base).items():
        print(f"{key}: {json.dumps(value)}")
    print(f"\nrun as a DVC experiment: {shlex.join(cmd)}\n(or: classprune profile {a.name} --exp; "
          f"--write overwrites {a.params})")
    return 0


# name -> (one-line help, handler(argv) -> exit status). Add commands here (e.g. predict).
COMMANDS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "run": ("the whole pipeline (Prefect flow over the DVC DAG)", run_pipeline),
    "profile": ("show/apply a profile (--exp: dvc exp run, --write)", run_profile),
    "seeds": ("make pipelines/seed_<s>/ (one per seed) follow run.seeds", run_seeds),
    "predict": ("score images with an export: models/export[_channel]/<name>", run_predict),
    **{step: (help_, lambda argv, step=step: _pin_isa(argv) or run_step(step, argv)) for step, (help_, _) in STEPS.items()},
}


def _main_parser() -> argparse.ArgumentParser:
    class Help(argparse.HelpFormatter):  # commands sit 4 columns in; 3.11's argparse sizes their column for 2
        def __init__(self, prog: str) -> None:
            super().__init__(prog)
            self._action_max_length = 4 + max(map(len, COMMANDS))

    p = argparse.ArgumentParser(prog="classprune", formatter_class=Help, description="Class-dependent lottery-ticket "
                                "pruning as a DVC pipeline run by Prefect. `classprune COMMAND --help` shows a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (help_, _) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)   # each command parses its own options
    return p


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _main_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help(sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})")
    sys.exit(COMMANDS[argv[0]][1](argv[1:]))


if __name__ == "__main__":
    main()
