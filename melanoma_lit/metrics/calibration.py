"""Calibration of the per-class sigmoid probabilities: expected calibration error and binary NLL.

ECE follows torchmetrics' ``BinaryCalibrationError`` (``n_bins=15, norm="l1"``): each class's known entries are
binned by their probability into 15 equal-width bins ``[i/15, (i+1)/15)`` (a probability of exactly 1 forms one
more bin, as there), and ECE is the count-weighted mean of ``|observed positive rate - mean probability|`` over
the bins. NLL is the mean binary cross-entropy over every known entry, probabilities clipped to
``[1e-7, 1 - 1e-7]`` (a CSV rounded to 6 decimals holds exact 0s and 1s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

ECE_BINS = 15
NLL_EPS = 1e-7


@dataclass(frozen=True)
class ReliabilityBins:
    """One class's bins (``ECE_BINS + 1``, the last holding probabilities of exactly 1): how many known entries
    fall in each, their mean probability and their observed positive rate (both 0 in an empty bin)."""

    counts: np.ndarray
    mean_probability: np.ndarray
    positive_rate: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if not total:
            return np.nan
        return float(np.sum(np.abs(self.positive_rate - self.mean_probability) * self.counts / total))


def reliability_bins(probs: np.ndarray, truth: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin one class's probabilities of its known entries as torchmetrics' ``_binning_bucketize`` does."""
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64).numpy()  # its edges to the bit (not numpy's)
    index = np.searchsorted(edges, probs, side="right") - 1  # torch.bucketize(right=True) - 1
    counts, sums, positives = (
        np.bincount(index, weights=weights, minlength=n_bins + 1).astype(np.float64)
        for weights in (None, probs, truth.astype(np.float64))
    )
    filled = counts > 0
    mean = np.divide(sums, counts, out=np.zeros_like(sums), where=filled)
    rate = np.divide(positives, counts, out=np.zeros_like(positives), where=filled)
    return ReliabilityBins(counts, mean, rate)


def calibration_metrics(p: np.ndarray, t: np.ndarray, k: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """``ece/<class>`` (NaN for a class without a known entry), ``ece_macro`` (their mean, NaN skipped) and
    ``nll``, from float64 probabilities and boolean targets and known mask ``[N, K]`` (``arrays.check_inputs``)."""
    per_class = [reliability_bins(p[k[:, c], c], t[k[:, c], c]).ece for c in range(p.shape[1])]
    result = {f"ece/{cls}": value for cls, value in zip(classes, per_class, strict=True)}
    finite = [value for value in per_class if not np.isnan(value)]
    result["ece_macro"] = float(np.mean(finite)) if finite else np.nan
    result["nll"] = binary_nll(p, t, k)
    return result


def binary_nll(p: np.ndarray, t: np.ndarray, k: np.ndarray) -> float:
    """Mean binary cross-entropy of the known entries (the training loss without its options); NaN if none."""
    if not k.any():
        return np.nan
    clipped = np.clip(p[k], NLL_EPS, 1.0 - NLL_EPS)
    return float(-np.mean(np.where(t[k], np.log(clipped), np.log1p(-clipped))))
