"""Pictures of the ISIC metrics: ROC and precision-recall curves, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sklearn.metrics
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from melanoma_lit.errors import ConfigError
from melanoma_lit.metrics.isic import ArrayLike, both_labels, check_inputs


def plot_roc_curves(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str], path: str | Path
) -> Path:
    """One ROC curve per class over its known entries; classes with a single label value are named in the title."""
    p, t, k = check_inputs(probs, targets, known, classes)
    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    skipped = []
    for column, cls in enumerate(classes):
        rows = k[:, column]
        truth, score = t[rows, column], p[rows, column]
        if not both_labels(truth):
            skipped.append(cls)
            continue
        fpr, tpr, _ = sklearn.metrics.roc_curve(truth, score)
        axes.plot(fpr, tpr, label=f"{cls} (AUC {sklearn.metrics.roc_auc_score(truth, score):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    axes.set_title("ROC" + (f" (no ROC: {', '.join(skipped)})" if skipped else ""))
    if len(skipped) < len(classes):
        axes.legend(loc="lower right", fontsize="small")
    return save_figure(figure, path)


def plot_pr_curves(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str], path: str | Path
) -> Path:
    """One precision-recall curve per class over its known entries, with its average precision."""
    p, t, k = check_inputs(probs, targets, known, classes)
    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    skipped = []
    for column, cls in enumerate(classes):
        rows = k[:, column]
        truth, score = t[rows, column], p[rows, column]
        if not both_labels(truth):
            skipped.append(cls)
            continue
        precision, recall, _ = sklearn.metrics.precision_recall_curve(truth, score)
        ap = sklearn.metrics.average_precision_score(truth, score)
        axes.step(recall, precision, where="post", label=f"{cls} (AP {ap:.3f})")
    axes.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    axes.set_title("Precision-recall" + (f" (none: {', '.join(skipped)})" if skipped else ""))
    if len(skipped) < len(classes):
        axes.legend(loc="lower left", fontsize="small")
    return save_figure(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: str | Path) -> Path:
    """Counts annotated, cells coloured by row share (per-class recall on the diagonal)."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(classes), len(classes)):
        raise ConfigError(
            f"confusion matrix has shape {matrix.shape} but {len(classes)} classes were given ({', '.join(classes)}); "
            "pass the class list the matrix was computed with."
        )
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = 1.5 + 0.6 * len(classes)
    figure = Figure(figsize=(size, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axes.text(column, row, f"{count:g}", ha="center", va="center", color=colour, fontsize="small")
    ticks = range(len(classes))
    axes.set_xticks(ticks, labels=list(classes), rotation=45)
    axes.set_yticks(ticks, labels=list(classes))
    axes.set(xlabel="predicted", ylabel="true", title="Confusion matrix (colour: row share)")
    return save_figure(figure, path)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Every plot of the project: PNG at 120 dpi, its folder created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
