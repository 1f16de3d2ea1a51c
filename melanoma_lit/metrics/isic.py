"""Lesion-classification metrics equal to the official ISIC scorer, with unknown labels masked out.

Inputs are ``probs``, ``targets`` and ``known`` of shape ``[N, K]`` (one sigmoid probability per class);
an entry with ``known == 0`` is left out of its class's metrics.

Parity with ``isic-challenge-scoring`` 5.6: AUC and AP call the same sklearn functions on float64 copies, so
they are bit-identical (torchmetrics' ``binary_auroc``/``binary_average_precision`` differ by ~2e-8); a
prediction is positive when ``prob > threshold`` and a target when ``target > 0.5`` (both strict, as the scorer);
balanced accuracy is the scorer's argmax mean per-class recall, a tied argmax counting as wrong (its
``undecided`` label); ``auc_sens80`` is its partial ROC area above 80 % sensitivity. One deliberate difference:
where a metric is 0/0 (no positives, no negatives, no predicted positives) the scorer scores a "freebie" 1.0
(and AP 0.0), we return NaN, so a class missing from a split cannot inflate a macro mean; macro means skip NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sklearn.metrics
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from melanoma_lit.data.taxonomy import MALIGNANT
from melanoma_lit.errors import ConfigError
from melanoma_lit.metrics.arrays import ArrayLike, both_labels, check_inputs, check_shapes, confusion_counts
from melanoma_lit.metrics.calibration import calibration_metrics
from melanoma_lit.metrics.challenges import challenge_scores

PER_CLASS_METRICS: tuple[str, ...] = ("auc", "ap", "auc_sens80", "precision", "recall", "specificity", "f1")
MEL_SPECIFICITY = 0.9
SENSITIVITY_FOR_PARTIAL_AUC = 0.8


def compute_metrics(
    probs: ArrayLike,
    targets: ArrayLike,
    known: ArrayLike,
    classes: Sequence[str],
    threshold: float = 0.5,
    challenges: Sequence[str] = (),
) -> dict[str, float]:
    """Per-class, macro and aggregate metrics of one prediction set.

    Keys: ``<metric>/<class>`` and ``<metric>_macro`` for ``PER_CLASS_METRICS``; ``decided_balanced_accuracy``
    (argmax over the fully decided rows: every class known and exactly one positive, so multi-label and
    unknown-diagnosis rows do not count); with MEL in ``classes`` ``mel_auc`` and ``mel_sens_at_90_spec``;
    with a malignant class in ``classes`` ``malignant_auc``, see ``_malignant_auc``; ``ece/<class>``, ``ece_macro``
    and ``nll`` (see metrics.calibration); and each of ``challenges``' official metrics, ``<challenge>/<metric>``
    (see metrics.challenges).
    """
    p, t, k = check_inputs(probs, targets, known, classes)
    predicted = p > threshold
    per_class: dict[str, list[float]] = {name: [] for name in PER_CLASS_METRICS}
    for column in range(p.shape[1]):
        rows = k[:, column]
        truth, score = t[rows, column], p[rows, column]
        values = {**_rank_metrics(truth, score), **_threshold_metrics(truth, predicted[rows, column])}
        for name in PER_CLASS_METRICS:
            per_class[name].append(values[name])
    result = {
        f"{name}/{cls}": value
        for name in PER_CLASS_METRICS
        for cls, value in zip(classes, per_class[name], strict=True)
    }
    result.update({f"{name}_macro": _nanmean(per_class[name]) for name in PER_CLASS_METRICS})
    result.update(calibration_metrics(p, t, k, classes))
    matrix, true_counts = _confusion(p, t, k)
    result["decided_balanced_accuracy"] = _nanmean(np.diag(matrix)[true_counts > 0] / true_counts[true_counts > 0])
    if "MEL" in classes:
        mel = list(classes).index("MEL")
        rows = k[:, mel]
        result["mel_auc"] = result["auc/MEL"]
        result["mel_sens_at_90_spec"] = _sensitivity_at_specificity(t[rows, mel], p[rows, mel], MEL_SPECIFICITY)
    malignant = [column for column, cls in enumerate(classes) if cls in MALIGNANT]
    if malignant:
        result["malignant_auc"] = _malignant_auc(p[:, malignant], t[:, malignant], k[:, malignant])
    for challenge in challenges:
        result.update(challenge_scores(challenge, p, t, k, classes))
    return result


def confusion_matrix(probs: ArrayLike, targets: ArrayLike, known: ArrayLike) -> np.ndarray:
    """Counts ``[true, predicted]`` over the fully decided rows (see ``compute_metrics``), predicted = argmax.

    A row whose highest probability is tied is counted in no column, as in the ISIC scorer; so a row of the
    matrix can sum to less than that class's number of decided rows.
    """
    return _confusion(*check_inputs(probs, targets, known, None))[0]


class LesionMetrics(Metric):
    """Epoch accumulator for ``compute_metrics``; ``cat`` states so DDP gathers every rank's rows."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, classes: Sequence[str], threshold: float = 0.5, challenges: Sequence[str] = (), **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        if not classes:
            raise ConfigError("LesionMetrics needs at least one class name; pass the model's class list.")
        self.classes = tuple(classes)
        self.threshold = threshold
        self.challenges = tuple(challenges)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("known", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, targets: Tensor, known: Tensor) -> None:
        """Stores the batch on its device; shape checks only, so no host sync."""
        check_shapes(tuple(probs.shape), tuple(targets.shape), tuple(known.shape), len(self.classes))
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach().float())
        self.known.append(known.detach().float())

    def compute(self) -> dict[str, Tensor]:
        values = compute_metrics(
            dim_zero_cat(self.probs),
            dim_zero_cat(self.targets),
            dim_zero_cat(self.known),
            self.classes,
            self.threshold,
            self.challenges,
        )
        return {name: torch.tensor(value, dtype=torch.float32, device=self.device) for name, value in values.items()}


def _rank_metrics(truth: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUC, AP and partial AUC, NaN unless both label values occur."""
    if not both_labels(truth):
        return {"auc": np.nan, "ap": np.nan, "auc_sens80": np.nan}
    fpr, tpr, _ = sklearn.metrics.roc_curve(truth, score, drop_intermediate=False)
    return {
        "auc": float(sklearn.metrics.roc_auc_score(truth, score)),
        "ap": float(sklearn.metrics.average_precision_score(truth, score)),
        "auc_sens80": _auc_above_sensitivity(fpr, tpr, SENSITIVITY_FOR_PARTIAL_AUC),
    }


def _auc_above_sensitivity(fpr: np.ndarray, tpr: np.ndarray, sensitivity: float) -> float:
    """ROC area where sensitivity >= ``sensitivity``, not McClish-normalised (the ISIC ``auc_sens_80``)."""
    first = int(np.searchsorted(tpr, sensitivity, side="left"))  # tpr[first - 1] < sensitivity <= tpr[first]
    fpr_at = np.interp(sensitivity, tpr[first - 1 : first + 1], fpr[first - 1 : first + 1])
    return float(sklearn.metrics.auc(np.r_[fpr_at, fpr[first:]], np.r_[sensitivity, tpr[first:]]))


def _sensitivity_at_specificity(truth: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """Sensitivity where the ROC curve, linearly interpolated as ISIC does, reaches ``specificity``.

    At a vertical step exactly on the target the higher sensitivity counts (that threshold is attainable).
    """
    if not both_labels(truth):
        return np.nan
    fpr, tpr, _ = sklearn.metrics.roc_curve(truth, score, drop_intermediate=False)
    target = 1.0 - specificity
    # The tolerance keeps 1 - 0.9 = 0.0999... on the far side of a step at fpr == 0.1.
    after = int(np.searchsorted(fpr, target + 1e-12, side="right"))
    if after == len(fpr):
        return float(tpr[-1])
    return float(np.interp(target, fpr[after - 1 : after + 1], tpr[after - 1 : after + 1]))


def _threshold_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    tp = int((truth & predicted).sum())
    fp = int((~truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    tn = int((~truth & ~predicted).sum())
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def _confusion(p: np.ndarray, t: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matrix over fully decided rows and each class's number of such rows (tied rows included)."""
    decided = k.all(axis=1) & (t.sum(axis=1) == 1)
    return confusion_counts(p[decided], t[decided])


def _malignant_auc(p: np.ndarray, t: np.ndarray, k: np.ndarray) -> float:
    """Malignant-vs-benign AUC; columns are the malignant classes only.

    Score: the sum of the malignant probabilities, P(malignant) when diagnoses are mutually exclusive (as
    every ISIC label is) and the usual ISIC practice; it uses every malignant probability, label known or not,
    since it is the model's prediction. Label: any known-positive malignant class. Rows with no known-positive
    malignant class and some malignant class unknown are undecided and left out.
    """
    positive = (t & k).any(axis=1)
    decided = positive | k.all(axis=1)
    truth = positive[decided]
    if not both_labels(truth):
        return np.nan
    return float(sklearn.metrics.roc_auc_score(truth, p[decided].sum(axis=1)))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else np.nan


def _nanmean(values: Sequence[float] | np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    return float(finite.mean()) if len(finite) else np.nan
