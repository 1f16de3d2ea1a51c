"""Sweep analysis: read a multirun folder's jobs, summarise folds, stack out-of-fold predictions, write reports."""
