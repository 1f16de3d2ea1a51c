"""The one sweep plot metrics.py does not draw: configurations side by side, mean ± std with each fold's value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from melanoma_lit.analysis.cv import VAL_PREFIX, MeanStd
from melanoma_lit.analysis.jobs import Job
from melanoma_lit.metrics.plots import save_figure


def plot_comparison(
    groups: Mapping[str, Sequence[Job]],
    summaries: Mapping[str, Mapping[str, MeanStd]],
    titles: Mapping[str, str],
    path: str | Path,
) -> Path:
    """Grouped bars per metric (``titles``: metric -> axis label): one bar per configuration at its mean over
    folds, error bar one standard deviation, dots the single folds."""
    labels = list(groups)
    metrics = list(titles)
    width = 0.8 / max(1, len(labels))
    figure = Figure(figsize=(1.6 + 1.5 * len(metrics) + 0.2 * len(labels) * len(metrics), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    centres = np.arange(len(metrics))
    for index, label in enumerate(labels):
        offsets = centres - 0.4 + width * (index + 0.5)
        means = [summaries[label][m].mean for m in metrics]
        stds = [np.nan_to_num(summaries[label][m].std) for m in metrics]
        axes.bar(offsets, means, width * 0.9, yerr=stds, capsize=3, label=label, alpha=0.85)
        for offset, metric in zip(offsets, metrics, strict=True):
            values = [job.metrics.get(VAL_PREFIX + metric, np.nan) for job in groups[label] if job.completed]
            axes.scatter([offset] * len(values), values, s=10, color="black", zorder=3)
    axes.set_xticks(centres, labels=[titles[m] for m in metrics])
    axes.set(ylim=(0, 1.02), ylabel="validation score (mean ± std over folds; dots: folds)")
    axes.set_title("Configurations compared")
    axes.legend(fontsize="small", loc="lower right")
    return save_figure(figure, path)
