"""Prediction arrays as every metric reads them: float64 probabilities, boolean targets and known mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from melanoma_lit.errors import ConfigError, MelanomaLitError

ArrayLike = np.ndarray | Tensor


def check_shapes(
    probs: tuple[int, ...], targets: tuple[int, ...], known: tuple[int, ...], n_classes: int | None
) -> None:
    if len(probs) != 2 or targets != probs or known != probs:
        raise ConfigError(
            f"metrics need probs, targets and known of one shape [N, K]; got {probs}, {targets}, {known}. "
            "Pass the per-class sigmoid probabilities with the matching target and known-mask rows."
        )
    if n_classes is not None and probs[1] != n_classes:
        raise ConfigError(
            f"predictions have {probs[1]} columns but {n_classes} class names were given; "
            "make the model's number of outputs match the configured class list."
        )


def check_inputs(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 probabilities (as the scorer reads them), boolean targets and known mask."""
    p, t, k = (_to_numpy(values) for values in (probs, targets, known))
    check_shapes(p.shape, t.shape, k.shape, None if classes is None else len(classes))
    if not np.isfinite(p).all():
        raise MelanomaLitError(
            f"{int((~np.isfinite(p)).sum())} predicted probabilities are NaN or infinite: the model diverged; "
            "lower the learning rate, enable gradient clipping or use full precision."
        )
    return p, t > 0.5, k > 0.5


def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def both_labels(truth: np.ndarray) -> bool:
    return bool(truth.any()) and not bool(truth.all())


def confusion_counts(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``[true, argmax]`` of rows with exactly one true class, a tied argmax in no column (the scorer's
    "undecided" prediction), and each class's number of rows."""
    n_classes = scores.shape[1]
    true = truth.argmax(axis=1)
    tied = (scores == scores.max(axis=1, keepdims=True)).sum(axis=1) > 1 if len(scores) else np.zeros(0, dtype=bool)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (true[~tied], scores[~tied].argmax(axis=1)), 1)
    return matrix, np.bincount(true, minlength=n_classes)
