"""Class-balance weights: per-class positive weights for the loss and per-row weights for a balanced sampler."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from melanoma_lit.data.table import known_mask, primary_label, targets
from melanoma_lit.errors import ConfigError

# ISIC 2019's rarest classes (DF, VASC) sit near 100:1; beyond ~50 a handful of positives dominates the
# loss and the logits of a rare class explode, so the ratio is clipped to [1/50, 50].
MAX_POSITIVE_WEIGHT = 50.0


def positive_weights(
    table: pd.DataFrame, classes: Sequence[str], max_weight: float = MAX_POSITIVE_WEIGHT
) -> np.ndarray:
    """``pos_weight`` for BCE: negatives/positives per class over the rows that know the class, so unknown
    entries (masked out of the loss) do not count as negatives. A class with no known positive gets 1."""
    if max_weight < 1:
        raise ConfigError(f"max_weight={max_weight}: the clip bound of positive weights must be at least 1.")
    y, known = targets(table, classes), known_mask(table, classes)
    positives = (y * known).sum(axis=0)
    negatives = ((1 - y) * known).sum(axis=0)
    ratio = np.divide(negatives, positives, out=np.ones_like(positives), where=positives > 0)
    return np.clip(ratio, 1 / max_weight, max_weight).astype(np.float32)


def sample_weights(table: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Per-row weights for a draw with replacement (data.sampling.EpochSampler) that draws every primary label
    equally often: the inverse frequency of the row's primary label, mean 1. Rows with no known positive ('?') count
    as one more label."""
    labels = primary_label(table, classes)
    weights = 1.0 / labels.map(labels.value_counts()).to_numpy(dtype=np.float64)
    return weights * len(weights) / weights.sum() if len(weights) else weights
