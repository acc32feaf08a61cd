"""The front page and the documentation site stay true: README.md is a front page (short, no history), the
site builds under `mkdocs build --strict` (no broken link or anchor), every results table in docs/ is an
include of a file a command wrote, and a number that cites a file is in that file."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CITE = re.compile(r"<!-- cites? (?P<files>[^>]+?) -->")
# a number as prose writes one: 0.723, 1,161, 19.3 %, 2.4x, 5.74 ms (integers below 1,000 are counts and keys)
NUMBER = re.compile(r"(?<![\w.])(?<!Python )(\d{1,3}(?:,\d{3})+|\d+\.\d+)(?![\w.])")


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "a commit hash on the front page"
    for phrase in ("used to", "measured while", "before this change"):
        assert phrase not in text.lower(), phrase
    assert "make repro" in text and "make test" in text and "source .venv/bin/activate" in text
    assert "dvc exp run -S" in text and "classprune predict" in text
    for link in re.findall(r"\]\((docs/[\w-]+\.md|CHANGELOG\.md)\)", text):
        assert (ROOT / link).is_file(), link


def test_the_site_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "results" / "index.html").is_file()
    page = (tmp_path / "site" / "results" / "index.html").read_text()
    assert "fnr_black_below_red" not in page or "underpowered" in page
    # the included tables arrive as tables: the verdicts' headline and the default run's summary
    assert page.count("<table>") >= 3


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md"))


def test_results_tables_in_the_docs_are_includes():
    """A table row holding a measured value (a number with decimals) is written by a command and included,
    never typed into a page."""
    typed = [f"{p.name}: {line[:80]}" for p in _pages() for line in p.read_text().splitlines()
             if line.startswith("|") and len(re.findall(r"\d\.\d{2,}|\d,\d{3}", re.sub(r"`[^`]*`", "", line))) >= 2]
    assert not typed, typed


def _numbers(text: str) -> set[str]:
    return {m.group(1).replace(",", "") for m in NUMBER.finditer(re.sub(r"`[^`]*`", "", text))}


def _in_file(number: str, text: str) -> bool:
    """The number as written, or a value of the file that rounds to it (as a share too: 0.0333 is 3.3 %)."""
    if number in text.replace(",", ""):
        return True
    digits = len(number.split(".")[1]) if "." in number else 0
    target = float(number)
    for value in re.findall(r"-?\d+\.\d+(?:e-?\d+)?|-?\d+", text):
        v = float(value)
        if round(v, digits) == target or round(100 * v, digits) == target or round(-v, digits) == target:
            return True
    return False


def cited_numbers_missing(text: str, root: Path = ROOT) -> list[str]:
    """Per paragraph with a cite comment: the numbers of the paragraph that no cited file contains."""
    missing = []
    for para in text.split("\n\n"):
        for m in CITE.finditer(para):
            files = [root / f for f in m.group("files").split()]
            absent = [str(f.relative_to(root)) for f in files if not f.is_file()]
            if absent:
                missing.append(f"cited file missing: {absent}")
                continue
            content = "\n".join(f.read_text() for f in files)
            missing += [f"{n} not in {m.group('files')}" for n in sorted(_numbers(CITE.sub("", para)))
                        if not _in_file(n, content)]
    return missing


def test_every_cited_number_is_in_its_file():
    problems = [f"{p.name}: {x}" for p in [*_pages(), ROOT / "README.md"] for x in cited_numbers_missing(p.read_text())]
    assert not problems, problems


@pytest.mark.parametrize("paragraph, ok", [
    ("The dense model's test AUC is 0.9603 and its FNR 40.0 % <!-- cite r.csv -->", True),   # 0.4 as a share
    ("The dense model's test AUC is 0.9613 <!-- cite r.csv -->", False),                     # a planted wrong number
    ("It took 1,161 s <!-- cite r.csv -->", True),
    ("It took 1,162 s <!-- cite r.csv -->", False),
    ("Something <!-- cite no_such_file.csv -->", False),
])
def test_a_wrong_cited_number_or_a_missing_file_is_found(tmp_path, paragraph, ok):
    (tmp_path / "r.csv").write_text("method,auc,fnr,seconds\nblack,0.9603333333333334,0.4,1161\n")
    assert (cited_numbers_missing(paragraph, tmp_path) == []) == ok


def test_pages_that_report_results_cite_every_number():
    """The front page, the home page, Results and Benchmarks: a paragraph with a measured number carries the
    file it comes from (tables there are includes, checked above)."""
    bare = []
    for path in (ROOT / "README.md", DOCS / "index.md", DOCS / "results.md", DOCS / "benchmarks.md",
                 DOCS / "getting-started.md"):
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for para in text.split("\n\n"):
            if para.lstrip().startswith(("|", "{%", "<!--")):
                continue
            if _numbers(CITE.sub("", para)) and not CITE.search(para):
                bare.append(f"{path.name}: {para[:90]!r}")
    assert not bare, bare
