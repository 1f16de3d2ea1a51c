"""Cross-validation bookkeeping: which jobs form one configuration, their mean ± std over folds, fold sharing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma_lit.analysis.jobs import FOLD_KEY, Job, override_map
from melanoma_lit.analysis.predictions import VAL_PREDICTIONS

# Reported for every configuration: key of compute_metrics -> column title.
SUMMARY_METRICS: dict[str, str] = {
    "auc_macro": "macro AUC",
    "mel_auc": "melanoma AUC",
    "decided_balanced_accuracy": "balanced accuracy (decided rows)",
    "precision_macro": "precision (macro)",
    "recall_macro": "recall (macro)",
    "ece_macro": "ECE (macro, 15 bins)",
    "nll": "NLL",
}
VAL_PREFIX = "val/"


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1) over the folds where the metric is defined."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "–"
        return f"{self.mean:.4f}" if self.n == 1 else f"{self.mean:.4f} ± {self.std:.4f}"


def varying_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    maps = [override_map(job.overrides) for job in jobs]
    keys = dict.fromkeys(key for m in maps for key in m)
    return [key for key in keys if len({m.get(key) for m in maps}) > 1]


def group_jobs(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    """Jobs of one configuration, keyed by a label, in job order: every override that varies across the sweep
    except the fold (``backbone=a,b data.fold=0,1,2`` -> groups ``a`` and ``b`` of three jobs)."""
    varying = [key for key in varying_keys(jobs) if key != FOLD_KEY]
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        given = override_map(job.overrides)
        if len(varying) == 1:
            label = given.get(varying[0], "(unset)")
        else:
            label = " ".join(f"{key}={given[key]}" for key in varying if key in given)
        groups.setdefault(label or _common_backbone(jobs), []).append(job)
    return groups


def summarise(jobs: Sequence[Job], metrics: Sequence[str]) -> dict[str, MeanStd]:
    """Mean ± std over the completed jobs of each metric (``compute_metrics`` keys, without ``val/``)."""
    summary = {}
    for metric in metrics:
        values = np.array([job.metrics.get(VAL_PREFIX + metric, math.nan) for job in jobs if job.completed])
        finite = values[np.isfinite(values)]
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
        summary[metric] = MeanStd(float(finite.mean()) if len(finite) else math.nan, std, len(finite))
    return summary


def fold_check(groups: dict[str, list[Job]]) -> dict[str, object]:
    """Do all completed jobs validate on one saved split, and does each job's validation set match its fold there?

    Returns ``folds_files`` (distinct files named in metrics.json), ``shared`` (one file for all),
    ``matches_file`` (every job's validation images carry its fold in that file; None if it is gone) and
    ``identical_across_groups`` (per fold, every configuration validated on the same images).
    """
    completed = [job for jobs in groups.values() for job in jobs if job.completed]
    files = sorted({job.folds_file for job in completed if job.folds_file})
    result: dict[str, object] = {
        "folds_files": files,
        "shared": len(files) == 1,
        "matches_file": None,
        "identical_across_groups": None,
    }
    images = {job.num: set(_validated(job)) for job in completed}
    by_fold: dict[object, list[set[str]]] = {}
    for job in completed:
        by_fold.setdefault(job.fold, []).append(images[job.num])
    if completed:
        result["identical_across_groups"] = all(all(s == sets[0] for s in sets) for sets in by_fold.values())
    if len(files) == 1 and Path(files[0]).exists():
        fold_of = pd.read_csv(files[0], dtype={"image_id": str}).set_index("image_id")["fold"]
        result["matches_file"] = all(
            set(fold_of.reindex(list(images[job.num])).tolist()) <= _folds_of(job) for job in completed
        )
    return result


def _folds_of(job: Job) -> set[object]:
    return set(job.fold) if isinstance(job.fold, tuple) else {job.fold}


def _validated(job: Job) -> list[str]:
    path = job.dir / VAL_PREDICTIONS
    return pd.read_csv(path, usecols=["image"], dtype={"image": str})["image"].tolist() if path.exists() else []


def _common_backbone(jobs: Sequence[Job]) -> str:
    names = {job.backbone for job in jobs if job.backbone}
    return names.pop() if len(names) == 1 else "all jobs"
