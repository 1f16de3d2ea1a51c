"""Sweep analysis: read a multirun folder's jobs, summarise folds, stack out-of-fold predictions, write reports."""

from melanoma_lit.analysis.sweep_report import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report"]
