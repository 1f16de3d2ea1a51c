"""Compare the arms of run.sh: comparison.md (official ISIC 2018 Task 3 score per fold) and time_to_accuracy.png.

Reads <results>/<arm>/fold<K>/: plain_ce and plain_weighted_ce are plain_loop.py's folders, recipe (and
recipe_pos_weight, the recipe before its class-balanced sampler) a `python -m melanoma_lit.train
experiment=isic2018_task3` run folder. Every final score is recomputed here by
isic-challenge-scoring from the truth and predictions files each arm wrote for its best epoch (mirror TTA):
plain_loop.py's isic2018_task3_{truth,predictions}.csv, the recipe's challenges/isic2018_task3_{truth,predictions}.csv.
Curves: validation balanced multiclass accuracy per epoch against training wall time (plain arms: epochs.jsonl,
with TTA, clock from the start of main() so image decoding counts; recipe: csv/metrics.csv's
time/elapsed_seconds, without TTA, clock from the start of fit).
"""

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from isic_challenge_scoring import ClassificationMetric, ClassificationScore
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
# recipe: experiment=isic2018_task3 as committed; recipe_pos_weight: its earlier form (positive weights, no sampler)
ARMS = {
    "plain_ce": "tab:blue",
    "plain_weighted_ce": "tab:green",
    "recipe_pos_weight": "tab:orange",
    "recipe": "tab:red",
}
CHALLENGE = "isic2018_task3"
RECIPE_CURVE = f"val/{CHALLENGE}/balanced_multiclass_accuracy"


def score(truth_csv: Path, predictions_csv: Path) -> dict[str, float]:
    """Official balanced multiclass accuracy, per-class argmax recall (their mean) and melanoma AUC."""
    official = ClassificationScore.from_file(truth_csv, predictions_csv, ClassificationMetric.BALANCED_ACCURACY)
    truth, predictions = (pd.read_csv(path, index_col="image") for path in (truth_csv, predictions_csv))
    predictions = predictions.loc[truth.index, truth.columns]
    hits = predictions.to_numpy().argmax(1) == truth.to_numpy().argmax(1)
    recall = {c: float(hits[truth[c].to_numpy() == 1].mean()) for c in truth.columns}
    mel_auc = float(roc_auc_score(truth["MEL"], predictions["MEL"]))
    return {"bacc": float(official.overall), "mel_auc": mel_auc, **recall}


def read_fold(arm: str, folder: Path) -> dict | None:
    """The fold's scores and curve (minutes, epoch, balanced accuracy), or None while the run is unfinished."""
    if arm.startswith("recipe"):
        if not (folder / "metrics.json").exists():
            return None
        result = score(*(folder / "challenges" / f"{CHALLENGE}_{kind}.csv" for kind in ("truth", "predictions")))
        history = pd.read_csv(folder / "csv" / "metrics.csv")
        curve = history.dropna(subset=[RECIPE_CURVE]).groupby("epoch")[[RECIPE_CURVE, "time/elapsed_seconds"]].last()
        curve = pd.DataFrame(
            {"epoch": curve.index, "bacc": curve[RECIPE_CURVE], "seconds": curve["time/elapsed_seconds"]}
        )
    else:
        if not (folder / "result.json").exists():
            return None
        result = score(folder / f"{CHALLENGE}_truth.csv", folder / f"{CHALLENGE}_predictions.csv")
        curve = pd.read_json(folder / "epochs.jsonl", lines=True)
        curve = curve.rename(columns={"val_balanced_accuracy": "bacc", "wall_seconds": "seconds"})
    return {**result, "minutes": curve["seconds"].max() / 60, "curve": curve[["epoch", "bacc", "seconds"]]}


def mean_std(values: list[float], digits: int = 3) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the folder holding <arm>/fold<K>/")
    parser.add_argument("--out", type=Path, default=HERE, help="where comparison.md and the plot go")
    args = parser.parse_args()

    runs: dict[str, dict[int, dict]] = {}
    for arm in ARMS:
        for folder in sorted((args.results / arm).glob("fold[0-9]*")):
            if (run := read_fold(arm, folder)) is not None:
                runs.setdefault(arm, {})[int(folder.name.removeprefix("fold"))] = run
    if not runs:
        raise SystemExit(f"no finished runs under {args.results}/<arm>/fold<K>/ (arms: {', '.join(ARMS)})")
    folds = sorted({fold for by_fold in runs.values() for fold in by_fold})
    classes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    lines = [
        f"| arm | {' | '.join(f'fold {k}' for k in folds)} | balanced multiclass accuracy | melanoma AUC | "
        f"recall {' / '.join(classes)} (mean) | training minutes (mean) |",
        "|---|" + "---|" * (len(folds) + 4),
    ]
    for arm, by_fold in runs.items():
        done = list(by_fold.values())
        cells = [f"{by_fold[k]['bacc']:.3f}" if k in by_fold else "" for k in folds]
        recalls = " / ".join(f"{np.mean([r[c] for r in done]):.2f}" for c in classes)
        lines.append(
            f"| {arm} | {' | '.join(cells)} | **{mean_std([r['bacc'] for r in done])}** | "
            f"{mean_std([r['mel_auc'] for r in done])} | {recalls} | {np.mean([r['minutes'] for r in done]):.1f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.md").write_text("\n".join(lines) + "\n")

    fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for arm, by_fold in runs.items():
        for i, fold in enumerate(sorted(by_fold)):
            curve, style = by_fold[fold]["curve"], {"color": ARMS[arm], "alpha": 0.8, "marker": "o", "ms": 3}
            by_time.plot(curve["seconds"] / 60, curve["bacc"], label=arm if i == 0 else None, **style)
            by_epoch.plot(curve["epoch"] + 1, curve["bacc"], **style)
    by_time.set(xlabel="training wall minutes (one CPU core)", ylabel="validation balanced multiclass accuracy")
    by_epoch.set(xlabel="epoch")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (by_time, by_epoch):
        axis.grid(alpha=0.3)
    by_time.legend()
    fig.suptitle("ISIC 2018 Task 3, grouped folds, resnet18 from scratch at 64 px: one line per fold")
    fig.tight_layout()
    fig.savefig(args.out / "time_to_accuracy.png", dpi=120)
    print((args.out / "comparison.md").read_text())
    print(json.dumps({arm: sorted(by_fold) for arm, by_fold in runs.items()}))


if __name__ == "__main__":
    main()
