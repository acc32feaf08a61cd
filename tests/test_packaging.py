"""The install set-up agrees with itself: what constraints.txt pins runs on every Python pyproject allows."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _lower_bound(spec: SpecifierSet) -> Version:
    lows = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    assert lows, f"requires-python {spec} has no lower bound"
    return max(lows)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_pinned_distributions_support_the_lowest_python_the_project_allows():
    """A pin whose Requires-Python excludes requires-python's lower bound makes `make` fail there (numpy 2.4 on 3.10)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest = _lower_bound(SpecifierSet(project["requires-python"]))
    pins, checked, bad = _pins(), 0, []
    assert {"numpy", "pandas", "scipy"} <= set(pins)
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue          # an optional extra that is not installed here
        if dist.version != version:
            continue          # metadata of another version says nothing about the pin
        checked += 1
        requires = dist.metadata.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(lowest, prereleases=True):
            bad.append(f"{name}=={version} requires Python {requires}")
    if not checked:
        pytest.skip("no pinned distribution is installed at its pinned version")
    assert not bad, f"requires-python allows {lowest}, but: {'; '.join(bad)}"


def test_lower_bound_reads_the_specifier():
    assert _lower_bound(SpecifierSet(">=3.11,<4")) == Version("3.11")
    assert not SpecifierSet(">=3.11").contains(Version("3.10"))


def _module_imports() -> dict[str, set[str]]:
    """classprune module -> the classprune modules it imports at module level (function-level imports are lazy)."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "classprune"
    files = {"classprune." + ".".join(f.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): f
             for f in src.rglob("*.py")}
    graph = {}
    for name, f in files.items():
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in files else target for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_no_import_cycle_and_no_file_over_300_lines():
    graph = _module_imports()
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        for dep in graph[node]:
            assert dep not in path, f"import cycle: {' -> '.join(path[path.index(dep):] + (dep,))}"
            if dep not in done:
                visit(dep, path + (dep,))
        done.add(node)

    for name in graph:
        visit(name, (name,))
    root = Path(__file__).resolve().parents[1]
    long = {str(f.relative_to(root)): n for f in [*root.glob("src/**/*.py"), *root.glob("flows/*.py")]
            if (n := len(f.read_text().splitlines())) > 300}
    assert not long, f"files over 300 lines: {long}"
