"""Compare the arms of run.sh: comparison.md (mean ± std over folds) and comparison.png.

Reads <results>/<arm>/fold<K>/metrics.json, written by `python -m melanoma_lit.train` from the best checkpoint's
predictions of the whole validation fold (mirror TTA): the run's own official ISIC 2018 Task 3 balanced multiclass
accuracy (val/isic2018_task3/balanced_multiclass_accuracy, the isic-challenge-scoring metric) and macro AUC; the fit's
wall time from csv/metrics.csv.
"""

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ARMS = {"image_only": "tab:blue", "image_metadata": "tab:red"}
METRICS = {
    "val/isic2018_task3/balanced_multiclass_accuracy": "Task 3 balanced multiclass accuracy",
    "val/auc_macro": "macro AUC",
}
CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the folder holding <arm>/fold<K>/")
    parser.add_argument("--out", type=Path, default=HERE, help="where comparison.md and comparison.png go")
    args = parser.parse_args()

    runs: dict[str, dict[int, dict[str, float]]] = {}
    for arm in ARMS:
        for metrics in sorted((args.results / arm).glob("fold[0-9]*/metrics.json")):
            fold = int(metrics.parent.name.removeprefix("fold"))
            values = json.loads(metrics.read_text())["metrics"]
            history = pd.read_csv(metrics.parent / "csv" / "metrics.csv")
            values["fit_minutes"] = history["time/elapsed_seconds"].max() / 60  # training + its validation
            runs.setdefault(arm, {})[fold] = values
    if not runs:
        raise SystemExit(f"no finished runs under {args.results}/<arm>/fold<K>/ (arms: {', '.join(ARMS)})")
    folds = sorted({fold for by_fold in runs.values() for fold in by_fold})
    lines = []
    for key, title in METRICS.items():
        lines += [
            f"**{title}** (`{key}`)",
            "",
            f"| arm | {' | '.join(f'fold {k}' for k in folds)} | mean ± std |",
            "|---|" + "---|" * (len(folds) + 1),
        ]
        for arm, by_fold in runs.items():
            cells = [f"{by_fold[k][key]:.3f}" if k in by_fold else "" for k in folds]
            lines.append(f"| {arm} | {' | '.join(cells)} | **{mean_std([m[key] for m in by_fold.values()])}** |")
        lines.append("")
    minutes = ", ".join(
        f"{arm} {np.mean([m['fit_minutes'] for m in by_fold.values()]):.1f}" for arm, by_fold in runs.items()
    )
    lines += [
        f"Fit minutes per run (mean; one CPU core, machine shared): {minutes}",
        "",
        "**Per-class AUC** (mean over folds)",
        "",
        f"| arm | {' | '.join(CLASSES)} |",
        "|---|" + "---|" * len(CLASSES),
    ]
    for arm, by_fold in runs.items():
        cells = [f"{np.mean([m[f'val/auc/{c}'] for m in by_fold.values()]):.3f}" for c in CLASSES]
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 4.2))
    arms = list(runs)
    for axis, (key, title) in zip(axes, METRICS.items(), strict=True):
        for fold in folds:  # one grey line per fold: the pairing the comparison is about
            pairs = [(i, runs[arm][fold][key]) for i, arm in enumerate(arms) if fold in runs[arm]]
            axis.plot(*zip(*pairs, strict=True), color="0.6", marker="o", ms=4, lw=1, zorder=1)
        for i, arm in enumerate(arms):
            values = [m[key] for m in runs[arm].values()]
            spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
            axis.errorbar(i + 0.08, np.mean(values), yerr=spread, color=ARMS[arm], marker="s", capsize=4, zorder=2)
        axis.set_xticks(range(len(arms)), arms)
        axis.set_xlim(-0.4, len(arms) - 0.6)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"ISIC 2018 Task 3, folds {folds}: resnet18 from scratch at 64 px (grey: one fold; square: mean ± std)"
    )
    fig.tight_layout()
    fig.savefig(args.out / "comparison.png", dpi=120)
    print((args.out / "comparison.md").read_text())


if __name__ == "__main__":
    main()
