"""The README's results are the committed reports' numbers: every table row of its "Results" section
appears verbatim in reports/summary.md, and the section names the seeds and the shortcut AUC the report
states. (A results sentence that contradicts the reports is a defect.)"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _results_section() -> str:
    return _section("Results on the embedded default")


def _table_rows(section: str) -> list[str]:
    return [ln for ln in section.splitlines()
            if ln.startswith("| ") and not re.fullmatch(r"\|[-:| ]+\|", ln) and "remaining %" not in ln]


def test_readme_result_rows_are_rows_of_the_committed_summary():
    summary = (ROOT / "reports" / "summary.md").read_text()
    rows = _table_rows(_results_section())
    assert len(rows) >= 8, "the results section quotes the summary's rows"
    missing = [r for r in rows if r not in summary]
    assert not missing, f"README rows not in reports/summary.md: {missing}"


def test_readme_states_the_shortcut_auc_of_the_report():
    summary = (ROOT / "reports" / "summary.md").read_text()
    auc = re.search(r"Darkest-pixel shortcut: test AUC (\d\.\d{3})", summary).group(1)
    assert f"darkest-pixel AUC {auc}" in _results_section()


def test_readme_network_rows_are_rows_of_the_committed_network_table():
    """The per-network results quote reports/archs/table.md (experiments/arch_table.py) row by row."""
    table = (ROOT / "reports" / "archs" / "table.md").read_text()
    rows = [r for r in _table_rows(_section("Results per network")) if not r.startswith("| network |")]
    assert len(rows) >= 4, "the per-network section quotes the table's rows"
    missing = [r for r in rows if r not in table]
    assert not missing, f"README rows not in reports/archs/table.md: {missing}"
