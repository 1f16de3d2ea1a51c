"""Metrics: parity with the official ISIC scorer, masking of unknown labels, the epoch accumulator, plots."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from isic_challenge_scoring import ClassificationMetric, ClassificationScore
from isic_challenge_scoring.metrics import auc as scorer_auc
from PIL import Image
from torchmetrics.classification import BinaryCalibrationError

from melanoma_lit.data.taxonomy import ISIC_CLASSES, MALIGNANT
from melanoma_lit.errors import ConfigError, MelanomaLitError
from melanoma_lit.metrics import plots
from melanoma_lit.metrics.calibration import ECE_BINS, reliability_bins
from melanoma_lit.metrics.isic import PER_CLASS_METRICS, LesionMetrics, compute_metrics, confusion_matrix
from melanoma_lit.metrics.plots import plot_confusion_matrix, plot_pr_curves, plot_reliability, plot_roc_curves

# Our per-class metric name -> the scorer's per-category column.
SCORER_NAMES = {
    "auc": "auc",
    "ap": "ap",
    "auc_sens80": "auc_sens_80",
    "precision": "ppv",
    "recall": "sensitivity",
    "specificity": "specificity",
    "f1": "dice",
}
PARITY_TOLERANCE = 1e-9
# The eight ISIC classes, then UNK (none of them: an all-zero, fully known target row).
CLASS_PRIORS = (0.17, 0.33, 0.12, 0.06, 0.12, 0.05, 0.05, 0.06, 0.04)


def make_predictions(n_rows: int, seed: int, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
    """ISIC 2019-like truth (one-hot or UNK) and sigmoid probabilities of noisy logits that carry signal."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(CLASS_PRIORS), size=n_rows, p=CLASS_PRIORS)
    targets = np.eye(len(CLASS_PRIORS))[labels, : len(ISIC_CLASSES)]
    logits = 2.5 * targets - 2.0 + rng.normal(0.0, 1.3, size=targets.shape)
    probs = 1.0 / (1.0 + np.exp(-logits))
    if rounded:
        # Two decimals, as many submissions are written: ties in every ranking, values exactly on 0.5.
        probs = np.round(probs, 2)
        probs[:5, :2] = 0.9  # tied argmax rows: the scorer calls them "undecided"
    return probs, targets


def isic_score(probs: np.ndarray, targets: np.ndarray, with_unk: bool) -> ClassificationScore:
    """The official scorer on the same rows, in the ISIC 2019 layout (UNK column) or the 2018 one (no UNK).

    Our all-zero target rows are the scorer's UNK truth; we never predict UNK (probability 0). The scorer
    cannot take an all-zero UNK truth column (its partial AUC indexes an empty ROC), so the 2019 layout needs
    UNK rows and the 2018 layout none.
    """
    images = pd.Index([f"ISIC_{i:07d}" for i in range(len(probs))], name="image")
    truth = pd.DataFrame(targets, index=images, columns=list(ISIC_CLASSES))
    prediction = pd.DataFrame(probs, index=images, columns=list(ISIC_CLASSES))
    if with_unk:
        truth["UNK"] = 1.0 - targets.max(axis=1)
        prediction["UNK"] = 0.0
    weights = pd.DataFrame({"score_weight": 1.0, "validation_weight": 1.0}, index=images)
    return ClassificationScore(truth, prediction, weights, ClassificationMetric.BALANCED_ACCURACY)


def isic_auc(truth: np.ndarray, score: np.ndarray) -> float:
    return scorer_auc(pd.Series(truth), pd.Series(score), pd.Series(np.ones(len(truth))))


def assert_same_metrics(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(actual[name], value, abs_tol=1e-7) or (math.isnan(actual[name]) and math.isnan(value)), name


@pytest.mark.parametrize("rounded", [False, True], ids=["continuous", "two-decimal"])
def test_parity_with_isic_challenge_scoring(rounded: bool) -> None:
    probs, targets = make_predictions(600, seed=2019, rounded=rounded)
    unk = targets.sum(axis=1) == 0
    assert unk.any(), "the ISIC 2019 layout needs UNK rows"
    if rounded:
        assert (probs == 0.5).any(), "the two-decimal case must put probabilities exactly on the threshold"
    ours = compute_metrics(probs, targets, np.ones_like(targets), ISIC_CLASSES)

    score = isic_score(probs, targets, with_unk=True)
    for name, scorer_name in SCORER_NAMES.items():
        for cls in ISIC_CLASSES:
            assert ours[f"{name}/{cls}"] == pytest.approx(
                score.per_category.loc[cls, scorer_name], abs=PARITY_TOLERANCE
            )
        expected_macro = score.per_category.loc[list(ISIC_CLASSES), scorer_name].mean()  # scorer's macro adds UNK
        assert ours[f"{name}_macro"] == pytest.approx(expected_macro, abs=PARITY_TOLERANCE)
    assert ours["mel_auc"] == ours["auc/MEL"]
    assert 0.7 < ours["auc_macro"] < 1.0, "the synthetic predictions should carry real signal"

    # Balanced accuracy leaves the UNK (undecided) rows out: the scorer on the decided rows, 2018 layout.
    decided_score = isic_score(probs[~unk], targets[~unk], with_unk=False)
    assert ours["decided_balanced_accuracy"] == pytest.approx(
        decided_score.aggregate["balanced_accuracy"], abs=PARITY_TOLERANCE
    )
    # Same value from the 2019 scorer: its UNK recall is 0 (never predicted), averaged in as a ninth class.
    assert ours["decided_balanced_accuracy"] * 8 / 9 == pytest.approx(
        score.aggregate["balanced_accuracy"], abs=PARITY_TOLERANCE
    )


def test_unknown_entries_do_not_change_results() -> None:
    rng = np.random.default_rng(7)
    probs, targets = make_predictions(400, seed=7, rounded=False)
    known = (rng.random(probs.shape) > 0.3).astype(float)
    result = compute_metrics(probs, targets, known, ISIC_CLASSES)

    unknown = known == 0
    scrambled_targets = targets.copy()
    scrambled_targets[unknown] = 1.0 - scrambled_targets[unknown]
    assert_same_metrics(compute_metrics(probs, scrambled_targets, known, ISIC_CLASSES), result)
    # Predictions of unknown entries matter only to malignant_auc, which scores every malignant probability.
    scrambled_probs = probs.copy()
    scrambled_probs[unknown] = rng.random(int(unknown.sum()))
    scrambled = compute_metrics(scrambled_probs, targets, known, ISIC_CLASSES)
    assert scrambled.pop("malignant_auc") != result["malignant_auc"]
    assert_same_metrics(scrambled, {name: value for name, value in result.items() if name != "malignant_auc"})

    for column, cls in enumerate(ISIC_CLASSES):
        rows = known[:, column] == 1
        subset = compute_metrics(probs[rows][:, [column]], targets[rows][:, [column]], np.ones((rows.sum(), 1)), [cls])
        for name in PER_CLASS_METRICS:
            assert result[f"{name}/{cls}"] == subset[f"{name}/{cls}"], f"{name}/{cls}"

    decided = known.all(axis=1)
    full_rows = compute_metrics(probs[decided], targets[decided], known[decided], ISIC_CLASSES)
    assert result["decided_balanced_accuracy"] == full_rows["decided_balanced_accuracy"]


def test_undecided_rows_leave_balanced_accuracy_and_confusion_matrix_unchanged() -> None:
    probs, targets = make_predictions(300, seed=3, rounded=False)
    known = np.ones_like(targets)
    extra_targets = np.zeros((3, len(ISIC_CLASSES)))
    # row 0: no diagnosis (UNK)
    extra_targets[1, [0, 1]] = 1.0  # two diagnoses
    extra_targets[2, 4] = 1.0  # one diagnosis but NV unknown
    extra_known = np.ones_like(extra_targets)
    extra_known[2, 1] = 0.0
    extra_probs = np.full_like(extra_targets, 0.1)
    extra_probs[:, 0] = 0.9

    base = compute_metrics(probs, targets, known, ISIC_CLASSES)
    grown = compute_metrics(
        np.r_[probs, extra_probs], np.r_[targets, extra_targets], np.r_[known, extra_known], ISIC_CLASSES
    )
    assert grown["decided_balanced_accuracy"] == base["decided_balanced_accuracy"]
    np.testing.assert_array_equal(
        confusion_matrix(np.r_[probs, extra_probs], np.r_[targets, extra_targets], np.r_[known, extra_known]),
        confusion_matrix(probs, targets, known),
    )
    assert grown["auc/MEL"] != base["auc/MEL"], "the extra rows still count for per-class metrics"


def test_confusion_matrix_and_balanced_accuracy_by_hand() -> None:
    classes = ("A", "B", "C")
    probs = np.array(
        [
            [0.9, 0.1, 0.1],  # A -> A
            [0.2, 0.7, 0.1],  # A -> B
            [0.1, 0.8, 0.3],  # B -> B
            [0.6, 0.6, 0.1],  # B, tied argmax: counted in no column, still a miss
            [0.1, 0.2, 0.4],  # C -> C
        ]
    )
    targets = np.eye(3)[[0, 0, 1, 1, 2]]
    expected = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(probs, targets, np.ones_like(targets)), expected)
    result = compute_metrics(probs, targets, np.ones_like(targets), classes)
    assert result["decided_balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_single_valued_classes_give_nan_and_macro_means_skip_them() -> None:
    probs, targets = make_predictions(300, seed=11, rounded=False)
    known = np.ones_like(targets)
    scc = ISIC_CLASSES.index("SCC")
    df = ISIC_CLASSES.index("DF")
    targets[:, scc] = 0.0  # known negatives only
    known[:, df] = 0.0  # nothing known
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics(probs, targets, known, ISIC_CLASSES)
    for name in ("auc", "ap", "auc_sens80", "recall"):
        assert math.isnan(result[f"{name}/SCC"]), name
    assert result["f1/SCC"] == 0.0, "no positives but false alarms: F1 = 2TP / (2TP + FP + FN) is defined"
    assert not math.isnan(result["specificity/SCC"])
    for name in PER_CLASS_METRICS:
        assert math.isnan(result[f"{name}/DF"]), name
        defined = [result[f"{name}/{cls}"] for cls in ISIC_CLASSES if not math.isnan(result[f"{name}/{cls}"])]
        assert result[f"{name}_macro"] == pytest.approx(sum(defined) / len(defined))
    assert math.isnan(result["decided_balanced_accuracy"]), "DF is never known, so no row is fully decided"


def test_threshold_moves_the_operating_point() -> None:
    probs, targets = make_predictions(200, seed=5, rounded=True)
    known = np.ones_like(targets)
    at_03 = compute_metrics(probs, targets, known, ISIC_CLASSES, threshold=0.3)
    binarised = compute_metrics((probs > 0.3).astype(float), targets, known, ISIC_CLASSES)
    at_05 = compute_metrics(probs, targets, known, ISIC_CLASSES)
    for name in ("precision", "recall", "specificity", "f1"):
        for cls in ISIC_CLASSES:
            assert at_03[f"{name}/{cls}"] == binarised[f"{name}/{cls}"]
    assert at_03["recall_macro"] > at_05["recall_macro"]


def test_melanoma_sensitivity_at_90_specificity_interpolates_the_roc() -> None:
    # 15 negatives: 90 % specificity (FPR 0.1) lies half-way along the diagonal ROC segment from
    # (1/15, 2/4) to (2/15, 3/4) made by the tie at 0.85, so the sensitivity is 0.625.
    positives = [0.99, 0.9, 0.85, 0.5]
    negatives = [0.95, 0.85] + [0.05] * 13
    probs = np.array(positives + negatives)[:, None]
    targets = np.array([1.0] * 4 + [0.0] * 15)[:, None]
    result = compute_metrics(probs, targets, np.ones_like(probs), ["MEL"])
    assert result["mel_sens_at_90_spec"] == pytest.approx(0.625)

    # 20 negatives: FPR 0.1 is hit exactly at a vertical step; the attainable (higher) sensitivity counts.
    positives = [0.99, 0.9, 0.8, 0.8]
    negatives = [0.95, 0.85] + [0.05] * 18
    probs = np.array(positives + negatives)[:, None]
    targets = np.array([1.0] * 4 + [0.0] * 20)[:, None]
    result = compute_metrics(probs, targets, np.ones_like(probs), ["MEL"])
    assert result["mel_sens_at_90_spec"] == 1.0


def test_malignant_auc_sums_malignant_probabilities_over_decided_rows() -> None:
    probs, targets = make_predictions(400, seed=13, rounded=False)
    known = np.ones_like(targets)
    malignant_columns = [ISIC_CLASSES.index(cls) for cls in MALIGNANT]
    label = targets[:, malignant_columns].max(axis=1)
    score = probs[:, malignant_columns].sum(axis=1)
    oracle = isic_auc(label, score)
    assert compute_metrics(probs, targets, known, ISIC_CLASSES)["malignant_auc"] == pytest.approx(oracle, abs=1e-12)

    # A benign row with BCC unknown is undecided (left out); a MEL row with BCC unknown is still malignant.
    undecided = ISIC_CLASSES.index("NV")
    extra_targets = np.zeros((2, len(ISIC_CLASSES)))
    extra_targets[0, undecided] = 1.0
    extra_targets[1, ISIC_CLASSES.index("MEL")] = 1.0
    extra_known = np.ones_like(extra_targets)
    extra_known[:, ISIC_CLASSES.index("BCC")] = 0.0
    extra_probs = np.full_like(extra_targets, 0.9)
    grown = compute_metrics(
        np.r_[probs, extra_probs], np.r_[targets, extra_targets], np.r_[known, extra_known], ISIC_CLASSES
    )
    expected = isic_auc(np.r_[label, 1.0], np.r_[score, extra_probs[1, malignant_columns].sum()])
    assert grown["malignant_auc"] == pytest.approx(expected, abs=1e-12)


def test_lesion_metrics_over_batches_equals_one_call() -> None:
    probs, targets = make_predictions(250, seed=17, rounded=True)
    known = (np.random.default_rng(17).random(probs.shape) > 0.2).astype(float)
    metric = LesionMetrics(ISIC_CLASSES)
    for start, stop in ((0, 37), (37, 100), (100, 101), (101, 250)):
        metric.update(*(torch.tensor(array[start:stop], dtype=torch.float32) for array in (probs, targets, known)))
    result = metric.compute()
    assert all(isinstance(value, torch.Tensor) and value.ndim == 0 for value in result.values())
    expected = compute_metrics(probs.astype(np.float32), targets, known, ISIC_CLASSES)
    assert_same_metrics({name: value.item() for name, value in result.items()}, expected)

    metric.reset()
    metric.update(*(torch.tensor(array[:60], dtype=torch.float32) for array in (probs, targets, known)))
    assert metric.compute()["auc/NV"].item() == pytest.approx(
        compute_metrics(probs[:60].astype(np.float32), targets[:60], known[:60], ISIC_CLASSES)["auc/NV"], abs=1e-7
    )


def test_bad_inputs_raise_project_errors() -> None:
    probs, targets = make_predictions(20, seed=1, rounded=False)
    known = np.ones_like(targets)
    with pytest.raises(ConfigError, match="8 columns but 7 class names"):
        compute_metrics(probs, targets, known, ISIC_CLASSES[:7])
    with pytest.raises(ConfigError, match="one shape"):
        compute_metrics(probs, targets[:10], known, ISIC_CLASSES)
    with pytest.raises(ConfigError, match="one shape"):
        LesionMetrics(ISIC_CLASSES).update(torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(4, 7))
    probs[3, 2] = np.nan
    with pytest.raises(MelanomaLitError, match="NaN or infinite"):
        compute_metrics(probs, targets, known, ISIC_CLASSES)
    with pytest.raises(ConfigError, match="3 classes"):
        plot_confusion_matrix(np.zeros((2, 2)), ["A", "B", "C"], "unused.png")


def test_plots_write_png_files(tmp_path) -> None:
    probs, targets = make_predictions(200, seed=23, rounded=False)
    known = np.ones_like(targets)
    known[:, ISIC_CLASSES.index("DF")] = 0.0  # no ROC for DF: named in the title, no crash
    roc_path = plot_roc_curves(probs, targets, known, ISIC_CLASSES, tmp_path / "plots" / "roc.png")
    matrix_path = plot_confusion_matrix(
        confusion_matrix(probs, targets, np.ones_like(targets)), ISIC_CLASSES, tmp_path / "confusion.png"
    )
    for path in (roc_path, matrix_path):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width > 300 and image.height > 300


def test_plots_say_each_class_score_the_skipped_classes_and_the_counts(tmp_path, monkeypatch) -> None:
    """What is drawn: per-class AUC/AP as compute_metrics has them, classes without a curve in the title,
    counts in the confusion cells; every figure its own (no pyplot figure left open)."""
    import matplotlib.pyplot as plt

    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.setdefault(Path(path).stem, figure))
    probs, targets = make_predictions(300, seed=31, rounded=False)
    known = np.ones_like(targets)
    known[:, ISIC_CLASSES.index("DF")] = 0.0
    metrics = compute_metrics(probs, targets, known, ISIC_CLASSES)
    curved = [cls for cls in ISIC_CLASSES if cls != "DF"]
    plot_roc_curves(probs, targets, known, ISIC_CLASSES, tmp_path / "roc.png")
    plot_pr_curves(probs, targets, known, ISIC_CLASSES, tmp_path / "pr.png")
    matrix = confusion_matrix(probs, targets, known)
    plot_confusion_matrix(matrix, ISIC_CLASSES, tmp_path / "confusion.png")

    roc, pr, confusion = (drawn[name].axes[0] for name in ("roc", "pr", "confusion"))
    assert roc.get_title() == "ROC (no ROC: DF)" and pr.get_title() == "Precision-recall (none: DF)"
    assert [t.get_text() for t in roc.get_legend().get_texts()] == [
        *(f"{cls} (AUC {metrics[f'auc/{cls}']:.3f})" for cls in curved),
        "Chance level (AUC = 0.5)",
    ]
    assert [t.get_text() for t in pr.get_legend().get_texts()] == [
        f"{cls} (AP {metrics[f'ap/{cls}']:.3f})" for cls in curved
    ]
    assert (roc.get_xlabel(), roc.get_ylabel()) == ("1 - specificity", "sensitivity")
    cells = [t.get_text() for t in confusion.texts]
    assert cells == [f"{count:g}" for count in matrix.flat]
    shares = confusion.images[0].get_array()
    np.testing.assert_allclose(shares.sum(axis=1)[matrix.sum(axis=1) > 0], 1.0)
    assert [t.get_text() for t in confusion.get_xticklabels()] == list(ISIC_CLASSES)
    assert plt.get_fignums() == []


def test_ece_per_class_equals_torchmetrics_binary_calibration_error() -> None:
    """15 equal-width bins, L1, over each class's known rows; probabilities on bin edges, exactly 0 and exactly 1
    (its own bin in torchmetrics) included."""
    probs, targets = make_predictions(400, seed=41, rounded=False)
    probs[:30] = np.round(probs[:30] * ECE_BINS) / ECE_BINS  # on the bin edges, 0 and 1 among them
    probs[30:35, 0], probs[35:40, 1] = 1.0, 0.0
    known = (np.random.default_rng(5).random(targets.shape) > 0.2).astype(float)
    known[:, ISIC_CLASSES.index("SCC")] = 0.0  # no known row: NaN, skipped by the macro mean
    metrics = compute_metrics(probs, targets, known, ISIC_CLASSES)
    expected = {}
    for column, cls in enumerate(ISIC_CLASSES):
        rows = known[:, column] > 0.5
        if rows.any():
            metric = BinaryCalibrationError(n_bins=15, norm="l1")
            expected[cls] = metric(torch.tensor(probs[rows, column]), torch.tensor(targets[rows, column])).item()
            assert metrics[f"ece/{cls}"] == pytest.approx(expected[cls], abs=1e-12), cls
    assert math.isnan(metrics["ece/SCC"])
    assert metrics["ece_macro"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)


def test_nll_is_the_mean_binary_cross_entropy_of_the_known_entries() -> None:
    probs = np.array([[0.8, 0.3], [0.4, 1.0], [0.9, 0.5]])
    targets = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    known = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    expected = -(np.log(0.8) + np.log(0.7) + np.log(0.6) + np.log(1e-7) + np.log(0.5)) / 5  # 1.0 clipped to 1 - 1e-7
    assert compute_metrics(probs, targets, known, ["MEL", "NV"])["nll"] == pytest.approx(expected, rel=1e-9)


def test_reliability_bins_by_hand() -> None:
    bins = reliability_bins(np.array([0.01, 0.05, 0.5, 0.52, 1.0]), np.array([False, True, True, True, True]))
    assert bins.counts.tolist() == [2, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]  # [0, 1/15), [7/15, 8/15), {1}
    assert bins.mean_probability[[0, 7, 15]].tolist() == pytest.approx([0.03, 0.51, 1.0])
    assert bins.positive_rate[[0, 7, 15]].tolist() == [0.5, 1.0, 1.0]
    assert bins.ece == pytest.approx((2 * 0.47 + 2 * 0.49 + 0.0) / 5)


def test_reliability_diagram_has_a_panel_per_class_with_its_ece_and_bin_counts(tmp_path, monkeypatch) -> None:
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.setdefault(Path(path).stem, figure))
    probs, targets = make_predictions(300, seed=37, rounded=False)
    known = np.ones_like(targets)
    known[:100, 0] = 0.0
    metrics = compute_metrics(probs, targets, known, ISIC_CLASSES)
    plot_reliability(probs, targets, known, ISIC_CLASSES, tmp_path / "reliability.png")
    panels = drawn["reliability"].axes
    assert len(panels) == len(ISIC_CLASSES)
    for column, (cls, axes) in enumerate(zip(ISIC_CLASSES, panels, strict=True)):
        rows = int(known[:, column].sum())
        assert axes.get_title() == f"{cls} (ECE {metrics[f'ece/{cls}']:.3f}, n={rows})"
        counts = [float(text.get_text()) for text in axes.texts]
        bins = reliability_bins(probs[known[:, column] > 0.5, column], targets[known[:, column] > 0.5, column] > 0.5)
        assert counts == [c for c in bins.counts[:ECE_BINS] if c] and sum(counts) == rows
    monkeypatch.undo()
    path = plot_reliability(probs, targets, known, ISIC_CLASSES, tmp_path / "real.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600


def _ddp_rank(rank: int, world_size: int, init_file: str, probs, targets, known, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metric = LesionMetrics(ISIC_CLASSES)
        rows = slice(rank, None, world_size)  # every other row, in a different number of batches per rank
        for batch in np.array_split(np.arange(len(probs))[rows], rank + 2):
            metric.update(*(torch.tensor(array[batch], dtype=torch.float32) for array in (probs, targets, known)))
        results[rank] = {name: value.item() for name, value in metric.compute().items()}
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes re-import torch: ~40 s on 2 cores
def test_lesion_metrics_gathers_every_rank_under_ddp(tmp_path) -> None:
    probs, targets = make_predictions(301, seed=29, rounded=False)  # 151 and 150 rows: uneven gather
    known = np.ones_like(targets)
    world_size = 2
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(
            _ddp_rank,
            args=(world_size, str(tmp_path / "ddp_init"), probs, targets, known, results),
            nprocs=world_size,
        )
        results = dict(results)
    expected = compute_metrics(probs.astype(np.float32), targets, known, ISIC_CLASSES)
    for rank in range(world_size):
        assert_same_metrics(results[rank], expected)
