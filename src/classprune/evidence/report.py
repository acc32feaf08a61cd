"""The `verdicts` stage: reports/evidence/verdicts.csv and verdicts.md from the declared claims and the rounds."""
from __future__ import annotations

import math

import pandas as pd

from .. import io
from ..config import Params
from . import claims
from .verdicts import EVIDENCE, KEYS, POWER, VERDICTS_CSV, VERDICTS_MD, table

HEADLINE_MD = EVIDENCE / "headline.md"
HEADLINE_NETWORK = "alexnet"

BITS = ("avx2", "native")


def write_verdicts(params: Params) -> dict:
    """Test every claim of hypotheses.yaml on every network's committed rounds; write the table and its page."""
    hyp = claims.load(claims.HYPOTHESES)
    power = pd.read_csv(POWER) if POWER.is_file() else None
    df = table(hyp, power)
    with io.atomic_path(VERDICTS_CSV) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    with io.atomic_path(VERDICTS_MD) as tmp:
        tmp.write_text(markdown(df, hyp) + failures(hyp))
    with io.atomic_path(HEADLINE_MD) as tmp:
        tmp.write_text(headline(df, hyp))
    return {"rows": len(df), "verdicts": df["verdict"].value_counts().to_dict() if len(df) else {}}


def _num(x: float, digits: int = 3, signed: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _cell(r) -> str:
    """effect [BCa CI], median, P(a better) [CI], collapses a/b, Holm p, verdict of one row."""
    ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"
    poi = f"{_num(r.p_improvement, 2, False)} [{_num(r.p_improvement_low, 2, False)}, {_num(r.p_improvement_high, 2, False)}]"
    need = "" if r.verdict != "underpowered" else f" (needs {int(r.seeds_needed)})" if math.isfinite(r.seeds_needed) else ""
    return (f"{_num(r.effect)} {ci} | {_num(r.median)} | {poi} | {r.collapsed_a}/{r.collapsed_b} ({r.dead_a}/{r.dead_b}) of {r.n_seeds} | "
            f"{r.p_adjusted:.3g} | **{r.verdict}**{need}")


def agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per claim cell, the verdict under each bit set and whether they agree (cells run under one set: n/a)."""
    wide = df.pivot_table(index=KEYS, columns="bits", values="verdict", aggfunc="first")
    present = [b for b in BITS if b in wide.columns]
    wide["agree"] = wide[present].nunique(axis=1).eq(1) if len(present) > 1 else pd.NA
    return wide.reset_index()


def markdown(df: pd.DataFrame, hyp: claims.Hypotheses) -> str:
    lines = ["# Verdicts of the declared claims", "",
             "Every claim of `reports/evidence/hypotheses.yaml` (declared before the evidence run), tested on the "
             f"{hyp.split} split, paired by seed. Effect: mean of a - b over seeds with its BCa {hyp.confidence:.0%} "
             "interval; the median beside it (collapsed seeds make the differences bimodal); P(a better): the "
             "probability that a run of a beats a run of b, with a stratified bootstrap interval; collapsed: seeds "
             "whose model is a constant predictor, in a and in b (dead: one score for every image, a network that "
             "no longer depends on its input); p: the claim's test, Holm-adjusted over the "
             f"family's levels; verdicts at alpha {hyp.alpha}. A seed whose model a is a constant predictor counts "
             "as the worst value of an argmax metric (FNR 1): a collapse is never a pass. Made by the `verdicts` "
             "stage.", ""]
    if df.empty:
        return "\n".join(lines + ["No rounds to test yet.", ""])
    lines += ["## Agreement between bit sets", "",
              "| claim | network | granularity | scenario | levels | " + " | ".join(BITS) + " | agree |",
              "|---|---|---|---|---|" + "---|" * len(BITS) + "---|"]
    order = {c.id: i for i, c in enumerate(hyp.claims)}
    wide = agreement(df).sort_values("claim", key=lambda c: c.map(order), kind="stable")
    for key, g in wide.groupby(KEYS[:4], sort=False):
        counts = []
        for bits in BITS:
            if bits not in g or g[bits].isna().all():
                counts.append("not run")
                continue
            tally = g[bits].value_counts()
            counts.append(", ".join(f"{n} {v}" for v, n in tally.items()))
        agree = "n/a" if g["agree"].isna().all() else ("yes" if g["agree"].all() else f"no ({int((~g['agree'].astype(bool)).sum())} levels)")
        lines.append(f"| {' | '.join(map(str, key))} | {len(g)} | {' | '.join(counts)} | {agree} |")
    lines.append("")
    says = {c.id: c.says for c in hyp.claims}
    for claim_id, g in df.groupby("claim", sort=False):
        lines += [f"## {claim_id}", "", f"*{says[claim_id]}*", "",
                  "| network | granularity | scenario | level | remaining | bits | effect [CI] | median | "
                  "P(a better) [CI] | collapsed a/b (dead) | p (Holm) | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in g.itertuples():
            lines.append(f"| {r.network} | {r.granularity} | {r.scenario} | {r.level} | {r.remaining:.4f} | "
                         f"{r.bits} | {_cell(r)} |")
        lines.append("")
    return "\n".join(lines)


def _tally(g: pd.DataFrame) -> str:
    """'supported at 5 of 6 levels (underpowered 1)': the verdicts of one family's levels."""
    counts = g["verdict"].value_counts()
    top = next((v for v in ("supported", "equivalent") if v in counts), None)
    rest = ", ".join(f"{v} {n}" for v, n in counts.items() if v != top)
    head = f"{top} at {counts[top]} of {len(g)} levels" if top else f"none of {len(g)} levels"
    return head + (f" ({rest})" if rest and top else f": {rest}" if rest else "")


def headline(df: pd.DataFrame, hyp: claims.Hypotheses, network: str = HEADLINE_NETWORK) -> str:
    """The front page's table: per claim and family of the evidence network, the seeds, the median effect's
    range over levels and the verdicts under each bit set (the README carries it verbatim; a test checks)."""
    sub = df[df["network"] == network] if len(df) else df
    lines = ["| claim | granularity | arms | seeds | median effect over levels | " + " | ".join(BITS) + " |",
             "|---|---|---|---|---|" + "---|" * len(BITS)]
    if sub.empty:
        return "\n".join(lines) + "\n"
    says = {c.id: c.says for c in hyp.claims}
    for claim in hyp.claims:
        for (granularity, scenario), g in sub[sub["claim"] == claim.id].groupby(["granularity", "scenario"], sort=False):
            cells, seeds = [], []
            for bits in BITS:
                b = g[g["bits"] == bits]
                cells.append(_tally(b) if len(b) else "not run")
                if len(b):
                    seeds.append(f"{int(b['n_seeds'].min())}" if b["n_seeds"].nunique() == 1
                                 else f"{int(b['n_seeds'].min())}-{int(b['n_seeds'].max())}")
            first = g[g["bits"] == g["bits"].iloc[0]]
            effect = f"{_num(first['median'].min())} to {_num(first['median'].max())}"
            lines.append(f"| {says[claim.id]} | {granularity} | {scenario} | {' / '.join(seeds)} | {effect} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def failures(hyp: claims.Hypotheses) -> str:
    """Every collapsed (constant predictor) and dead (one score for every image) model of the red and black
    arms on the claims' split, with the evaluate stage's diagnosis of why: a dead network is explained
    before it is counted."""
    lines = ["## Collapsed and dead models", "",
             f"Every red and black model ({hyp.split} split) that predicts one class for every image (collapsed) "
             "or gives every image the same score (dead), with the evaluate stage's diagnosis on val: "
             "`dead head` means every ReLU unit of one of the 8-wide head layers is zero for every image (the "
             "logits are then the last biases), `ranks, one class at argmax` a model that still ranks but predicts "
             "one class.", "",
             "| network | bits | method | seed | round | remaining | AUC | FNR | dead | cause |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (network, bits), path in hyp.sources().items():
        if not path.is_file():
            continue
        r = pd.read_csv(path)
        r = r[(r["split"] == hyp.split) & r["method"].str.match(r"^(red|black)(-channel(-reinit)?)?$")
              & (r["constant"].astype(bool) | r["score_constant"].astype(bool))]
        for x in r.sort_values(["method", "seed", "round"]).itertuples():
            lines.append(f"| {network} | {bits} | {x.method} | {x.seed} | {x.round} | {x.remaining:.4f} | "
                         f"{x.auc:.3f} | {x.fnr:.3f} | {'yes' if x.score_constant else 'no'} | {x.cause} |")
    return "\n".join(lines) + "\n"
