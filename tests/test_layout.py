"""The package is laid out by concept: plumbing at the top, the algorithm in concept packages, no module
reaching into another package's private names, and the architecture page's code-layout table naming every module."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "classprune"
PLUMBING = {"cli", "config", "prune_config", "profiles", "paths", "device", "isa", "io", "errors", "constants",
            "scenarios", "dvc_atomic", "pipelines"}
PACKAGES = {"lottery", "models", "evaluation", "reporting", "edge", "data", "baselines", "evidence"}


def _modules() -> dict[str, Path]:
    """Dotted name under classprune (``lottery.runner``, ``config``) -> file, without the __init__ files."""
    return {".".join(p.relative_to(SRC).with_suffix("").parts): p for p in SRC.rglob("*.py") if p.name != "__init__.py"}


def test_the_top_level_holds_only_plumbing_and_every_concept_is_a_package():
    top = {name for name in _modules() if "." not in name}
    assert top == PLUMBING, f"modules at the top that are not plumbing: {sorted(top - PLUMBING)}"
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == PACKAGES


def _imported(path: Path, name: str) -> list[tuple[str, str, int]]:
    """(absolute module, imported name, line) of every ``from X import y`` in one module of the package."""
    package = ["classprune", *name.split(".")[:-1]]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out += [(module, alias.name, node.lineno) for alias in node.names]
    return out


def test_no_module_imports_another_packages_private_names():
    def concept(dotted: str) -> str:
        parts = dotted.split(".")
        return parts[1] if len(parts) > 2 and parts[1] in PACKAGES else "<top>"

    bad = []
    for name, path in _modules().items():
        mine = concept(f"classprune.{name}")
        for module, imported, line in _imported(path, name):
            if not module.startswith("classprune"):
                continue
            private = imported.startswith("_") or any(p.startswith("_") for p in module.split(".")[1:])
            if private and concept(module) != mine:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{imported}")
    assert not bad, bad


def test_config_is_a_leaf():
    """config (and the prune section it holds) import no other concept: the Prefect flow, `classprune profile`
    and every stage read params without torch."""
    for leaf in ("config", "prune_config", "scenarios", "constants", "errors"):
        deps = {m for m, _, _ in _imported(SRC / f"{leaf}.py", leaf) if m.startswith("classprune")}
        # plumbing, the baselines' params section and the network names (torch-free modules)
        assert all(m.split(".")[1] in PLUMBING | {"baselines"} or m == "classprune.models.registry" for m in deps), \
            (leaf, deps)
        text = (SRC / f"{leaf}.py").read_text()
        assert not re.search(r"^\s*(import|from) torch", text, re.M), leaf


def test_the_architecture_pages_code_layout_table_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("## Code layout"):]
    table = table[: table.index("\n\n`tests/")]
    cells = set(re.findall(r"`([\w/.]+)`", table))
    missing = []
    for name in _modules():
        parts = name.split(".")
        if parts[0] in ("data", "baselines"):     # listed as a package
            ok = f"{parts[0]}/" in cells
        else:
            ok = "/".join(parts) in cells
        if not ok:
            missing.append(name)
    assert not missing, f"modules docs/architecture.md's code layout table does not name: {missing}"
