"""Pictures of the ISIC metrics: ROC and precision-recall curves, confusion matrices (scikit-learn's displays) and
reliability diagrams, each on an Agg figure of its own (no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from melanoma_lit.data.atomic import replaced
from melanoma_lit.errors import ConfigError
from melanoma_lit.metrics.arrays import ArrayLike, both_labels, check_inputs
from melanoma_lit.metrics.calibration import ECE_BINS, reliability_bins


def plot_roc_curves(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str], path: str | Path
) -> Path:
    """One ROC curve per class over its known entries; classes with a single label value are named in the title."""
    figure, axes = _figure(6.0)
    curves, skipped = _curves(probs, targets, known, classes)
    for index, (cls, truth, score) in enumerate(curves):
        display = RocCurveDisplay.from_predictions(
            truth,
            score,
            name=cls,
            ax=axes,
            plot_chance_level=index == len(curves) - 1,  # once, last in the legend
            chance_level_kw={"color": "grey", "linewidth": 0.8},
        )
        display.line_.set_label(f"{cls} (AUC {display.roc_auc:.3f})")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    axes.set_title("ROC" + (f" (no ROC: {', '.join(skipped)})" if skipped else ""))
    return _legend_and_save(figure, axes, "lower right", path)


def plot_pr_curves(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str], path: str | Path
) -> Path:
    """One precision-recall curve per class over its known entries, with its average precision."""
    figure, axes = _figure(6.0)
    curves, skipped = _curves(probs, targets, known, classes)
    for cls, truth, score in curves:
        display = PrecisionRecallDisplay.from_predictions(truth, score, name=cls, ax=axes)
        display.line_.set_label(f"{cls} (AP {display.average_precision:.3f})")
    axes.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    axes.set_title("Precision-recall" + (f" (none: {', '.join(skipped)})" if skipped else ""))
    return _legend_and_save(figure, axes, "lower left", path)


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
    figure, axes = _figure(1.5 + 0.6 * len(classes))
    display = ConfusionMatrixDisplay(shares, display_labels=list(classes)).plot(
        ax=axes,
        cmap="Blues",
        colorbar=False,
        xticks_rotation=45,
        im_kw={"vmin": 0.0, "vmax": 1.0},
        text_kw={"fontsize": "small"},
    )
    for text, count in zip(display.text_.flat, matrix.flat, strict=True):  # the colour is the share, the text the count
        text.set_text(f"{count:g}")
    axes.set(xlabel="predicted", ylabel="true", title="Confusion matrix (colour: row share)")
    return save_figure(figure, path)


def plot_reliability(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str], path: str | Path
) -> Path:
    """A panel per class over its known entries: the observed positive rate of each of the 15 equal-width
    probability bins against the diagonal, the bin's mean probability as a dot, its count above the bar, the
    class's ECE in the title (metrics.calibration; probabilities of exactly 1 are drawn in the last bin)."""
    p, t, k = check_inputs(probs, targets, known, classes)
    columns = min(4, len(classes))
    rows = -(-len(classes) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows))
    FigureCanvasAgg(figure)
    width = 1.0 / ECE_BINS
    left = np.arange(ECE_BINS) * width
    for column, cls in enumerate(classes):
        axes = figure.add_subplot(rows, columns, column + 1)
        truth, score = t[k[:, column], column], p[k[:, column], column]
        shown = reliability_bins(np.minimum(score, _BELOW_ONE), truth)  # exact 1s drawn in the last bin
        filled = shown.counts[:ECE_BINS] > 0
        rate, mean, counts = (
            values[:ECE_BINS][filled] for values in (shown.positive_rate, shown.mean_probability, shown.counts)
        )
        axes.bar(left[filled], rate, width=width, align="edge", color="tab:blue", alpha=0.6, edgecolor="white")
        axes.plot(mean, rate, "o", color="tab:red", markersize=3)
        axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
        for x, height, count in zip(left[filled], rate, counts, strict=True):
            axes.text(x + width / 2, min(height, 0.9) + 0.02, f"{count:g}", ha="center", fontsize=5, rotation=90)
        axes.set(xlim=(0, 1), ylim=(0, 1.05), aspect="equal", xlabel="predicted probability")
        axes.set_title(f"{cls} (ECE {reliability_bins(score, truth).ece:.3f}, n={len(score)})", fontsize="small")
        if column % columns == 0:
            axes.set_ylabel("observed positive rate")
    figure.suptitle(
        f"Reliability: observed positive rate (bars) and mean probability (dots) of {ECE_BINS} equal-width bins, "
        "counts above the bars",
        fontsize="small",
    )
    return save_figure(figure, path)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Every plot of the project: PNG at 120 dpi, its folder created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with replaced(path) as partial:  # a reader (W&B media, the sweep report) never sees half a PNG
        figure.savefig(partial, dpi=120, format="png")
    return path


_BELOW_ONE = np.nextafter(1.0, 0.0)


def _figure(size: float) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(size, size))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _curves(
    probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str]
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[str]]:
    """Per class, its known entries' truth and score; and the classes without both label values (no curve)."""
    p, t, k = check_inputs(probs, targets, known, classes)
    curves, skipped = [], []
    for column, cls in enumerate(classes):
        rows = k[:, column]
        truth, score = t[rows, column], p[rows, column]
        if both_labels(truth):
            curves.append((cls, truth, score))
        else:
            skipped.append(cls)
    return curves, skipped


def _legend_and_save(figure: Figure, axes: Axes, loc: str, path: str | Path) -> Path:
    """One legend over the relabelled curves, in place of the one each display drew with its own labels."""
    if axes.lines:
        axes.legend(loc=loc, fontsize="small")
    return save_figure(figure, path)
