"""The power analysis behind the evidence profile's seed counts (reports/evidence/power.csv, power.md).

For every claim of reports/evidence/hypotheses.yaml, on each network's pilot rounds (the committed
variances), the fewest seeds at which the claim's test rejects in 80 % of simulated studies
(classprune.evidence.power). Run once, committed with the hypotheses, before the evidence run:

    python experiments/power.py
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classprune import io  # noqa: E402
from classprune.evidence import claims, power  # noqa: E402
from classprune.evidence.verdicts import POWER  # noqa: E402


def summary(df) -> str:
    """Per claim and network: the most seeds any of its levels needs, and how many levels no grid count reaches."""
    lines = ["| claim | network | granularity | scenario | pilot seeds | seeds needed (max over levels) | levels out of reach |",
             "|---|---|---|---|---|---|---|"]
    for key, g in df.groupby(["claim", "network", "granularity", "scenario"], sort=False):
        finite = g.loc[g["seeds_needed"].map(math.isfinite), "seeds_needed"]
        most = f"{int(finite.max())}" if len(finite) else "none reaches"
        lines.append(f"| {' | '.join(key)} | {int(g['pilot_seeds'].max())} | {most} | "
                     f"{int((~g['seeds_needed'].map(math.isfinite)).sum())} of {len(g)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    hyp = claims.load(ROOT / claims.HYPOTHESES)
    df = power.analysis(hyp, ROOT)
    out = ROOT / POWER
    with io.atomic_path(out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    text = (f"# Seeds each claim needs (power {hyp.power:.0%} at alpha {hyp.alpha} / levels per family, "
            f"{power.SIMS} simulated studies per seed count, grid {list(power.GRID)})\n\n"
            "Made by `python experiments/power.py` from the pilot rounds named in hypotheses.yaml; "
            "per level in power.csv.\n\n" + summary(df))
    with io.atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
