"""Across seeds: means, CIs, paired differences, FN budget, summary.md, figures, ROC/PR curves."""
