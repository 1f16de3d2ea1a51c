"""Each ISIC year's headline metric, computed by metrics.challenges from the project's own tables, equals what
isic-challenge-scoring computes from that year's real ground-truth file and a submission in its layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from isic_challenge_scoring import ClassificationMetric, ClassificationScore
from isic_challenge_scoring.load_csv import parse_csv, parse_truth_csv, sort_rows, validate_rows
from isic_challenge_scoring.metrics import balanced_multiclass_accuracy

from melanoma_lit.data.merge import merge_sources
from melanoma_lit.data.sources import canonical_image_id, read_isic2017, read_isic2018, read_isic2019, read_isic2020
from melanoma_lit.data.table import known_mask, targets
from melanoma_lit.errors import ConfigError
from melanoma_lit.metrics.challenges import (
    CHALLENGES,
    challenge_probabilities,
    challenge_scores,
    challenge_truth,
    check_predictable,
    check_scorable,
)

# challenge -> (reader, truth file under the shared data, its id column, the scorer's target metric)
YEARS = {
    "isic2017_part3": (
        lambda root: read_isic2017(root / "isic2017", splits=["test"]),
        "isic2017/ISIC-2017_Test_v2_Part3_GroundTruth.csv",
        "image_id",
        ClassificationMetric.AUC,
    ),
    "isic2018_task3": (
        lambda root: read_isic2018(root / "isic2018"),
        "isic2018/ISIC2018_Task3_Training_GroundTruth.csv",
        "image",
        ClassificationMetric.BALANCED_ACCURACY,
    ),
    "isic2019_task1": (
        lambda root: read_isic2019(root / "isic2019"),
        "isic2019/ISIC_2019_Training_GroundTruth.csv",
        "image",
        ClassificationMetric.BALANCED_ACCURACY,
    ),
    "isic2020": (
        lambda root: read_isic2020(root / "isic2020", drop_duplicates=False),
        "isic2020/ISIC_2020_Training_GroundTruth_v2.csv",
        "image_name",
        ClassificationMetric.AUC,
    ),
}
HEADLINE_TOLERANCE = 1e-6


def noisy_probabilities(truth: np.ndarray, seed: int) -> np.ndarray:
    """Sigmoids of noisy logits that carry signal, two decimals: ties in every ranking and some tied argmaxes."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * truth - 1.5 + rng.normal(0.0, 1.4, size=truth.shape)
    return np.round(1.0 / (1.0 + np.exp(-logits)), 2)


def official_score(challenge: str, truth: pd.DataFrame, submission: pd.DataFrame, tmp_path: Path) -> float:
    """The scorer's headline value, read from a truth file and a submission file as the challenge read them.

    Balanced accuracy through the function its aggregate calls: ClassificationScore itself cannot take 2019's
    all-zero UNK truth column (its per-category partial AUC indexes an empty ROC)."""
    truth_path, submission_path = tmp_path / "truth.csv", tmp_path / "submission.csv"
    truth.to_csv(truth_path, index=False)
    submission.to_csv(submission_path, index=False)
    with truth_path.open() as truth_stream, submission_path.open() as submission_stream:
        expected, weights = parse_truth_csv(truth_stream)
        predicted = parse_csv(submission_stream, expected.columns)
    validate_rows(expected, predicted)
    sort_rows(expected)
    sort_rows(predicted)
    if YEARS[challenge][3] == ClassificationMetric.BALANCED_ACCURACY:
        return balanced_multiclass_accuracy(expected, predicted, weights.score_weight)
    return ClassificationScore(expected, predicted, weights, YEARS[challenge][3]).overall


def truth_table(challenge: str, truth_file: Path, id_column: str) -> pd.DataFrame:
    columns = [*CHALLENGES[challenge].columns, *CHALLENGES[challenge].unpredicted]
    truth = pd.read_csv(truth_file).rename(columns={id_column: "image"})[["image", *columns]]
    truth["image"] = canonical_image_id(truth["image"])  # 2019's "_downsampled" names: the ids our tables use
    return truth


@pytest.mark.parametrize("challenge", list(YEARS))
def test_headline_metric_equals_the_official_scorer_on_the_real_truth_file(
    challenge: str, shared_data: Path, tmp_path: Path
) -> None:
    read, truth_file, id_column, _ = YEARS[challenge]
    classes = list(CHALLENGES[challenge].classes)
    table = read(shared_data)  # the reader's own table: 2019's and 2020's images need not be on disk
    truth, known = targets(table, classes), known_mask(table, classes)
    probs = noisy_probabilities(truth, seed=len(classes))
    columns = [*CHALLENGES[challenge].columns, *CHALLENGES[challenge].unpredicted]
    submission = pd.DataFrame(challenge_probabilities(CHALLENGES[challenge], probs, classes), columns=columns)
    submission.insert(0, "image", table["image_id"].to_numpy())
    ours = challenge_scores(challenge, probs, truth, known, classes)
    official = official_score(
        challenge, truth_table(challenge, shared_data / truth_file, id_column), submission, tmp_path
    )
    headline = CHALLENGES[challenge].headline
    assert abs(ours[f"{challenge}/{headline}"] - official) <= HEADLINE_TOLERANCE, (ours, official)
    assert ours[f"{challenge}/scored_images"] == len(pd.read_csv(shared_data / truth_file))


def test_task3_scored_from_a_model_of_the_eight_2019_classes(shared_data: Path, tmp_path: Path) -> None:
    """A model trained on ISIC 2019's eight classes is scored on Task 3: AKIEC = min(1, AK + SCC), and the truth
    of HAM10000's AKIEC images comes from 2019's AK/SCC split, so every Task 3 image counts."""
    eight = list(CHALLENGES["isic2019_task1"].classes)
    both, _ = merge_sources(
        [read_isic2018(shared_data / "isic2018"), read_isic2019(shared_data / "isic2019")], eight, True
    )
    ham = both[both["source"] == "isic2018"].reset_index(drop=True)
    truth, known = targets(ham, eight), known_mask(ham, eight)
    probs = noisy_probabilities(truth, seed=3)
    task3 = CHALLENGES["isic2018_task3"]
    submission = pd.DataFrame(challenge_probabilities(task3, probs, eight), columns=list(task3.columns))
    submission.insert(0, "image", ham["image_id"].to_numpy())
    derived, _ = challenge_truth(task3, truth, known, eight)
    derived = pd.DataFrame(derived.astype(float), columns=list(task3.columns)).assign(image=ham["image_id"].to_numpy())
    published = truth_table("isic2018_task3", shared_data / "isic2018/ISIC2018_Task3_Training_GroundTruth.csv", "image")
    published = published.set_index("image").loc[derived["image"]]
    relabelled = (derived[list(task3.columns)].to_numpy() != published.to_numpy()).any(axis=1)
    assert int(relabelled.sum()) == 0  # 2019 keeps every HAM10000 diagnosis; it only splits AKIEC
    official = official_score("isic2018_task3", derived[["image", *task3.columns]], submission, tmp_path)
    ours = challenge_scores("isic2018_task3", probs, truth, known, eight)
    assert ours["isic2018_task3/scored_images"] == 10_015
    assert abs(ours["isic2018_task3/balanced_multiclass_accuracy"] - official) <= HEADLINE_TOLERANCE


def test_a_challenge_the_outputs_cannot_make_up_is_refused_with_the_classes_to_add() -> None:
    with pytest.raises(ConfigError, match=r"need \['AKIEC'\].*add \['AKIEC'\] to data.classes"):
        check_predictable(CHALLENGES["isic2018_task3"], ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"])
    check_predictable(CHALLENGES["isic2017_part3"], ["MEL", "NV", "BKL"])  # SK from its parent's probability


def test_a_challenge_whose_truth_the_labels_cannot_decide_is_refused_before_training() -> None:
    """A model's BKL gives Part 3's seborrheic keratosis probability, but a BKL label does not say SK."""
    with pytest.raises(ConfigError, match=r"truth needs labels of \['SK'\].*add \['SK'\] to data.classes"):
        check_scorable(CHALLENGES["isic2017_part3"], ["MEL", "NV", "BKL"])
    check_scorable(CHALLENGES["isic2017_part3"], ["MEL", "NV", "SK"])
    check_scorable(CHALLENGES["isic2018_task3"], ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"])  # AKIEC


def test_isic2017_trains_part3s_label_set_and_logs_its_mean_auc_as_the_scorer_computes_it(
    compose_train, shared_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """data=isic2017 is Part 3's task: melanoma, nevus, seborrheic keratosis outputs, scored as the two binary
    AUCs of Part 3 and their mean, equal to isic-challenge-scoring's on the files the run wrote."""
    from melanoma_lit.train import CHALLENGE_DIR, train

    run = tmp_path / "run"
    cfg = compose_train(
        "data=isic2017",
        f"paths.data_dir={shared_data}",
        "debug=limit",
        "trainer.limit_val_batches=1.0",  # the whole validation fold, with its seborrheic keratoses
        "trainer.limit_predict_batches=1.0",
        "backbone=resnet18",
        "backbone.pretrained=false",
        "data.input_size=32",
        "trainer.precision=32-true",
        "data.num_workers=0",
        f"paths.output_dir={run}",
        f"paths.cache_dir={cache_dir}",
    )
    assert (list(cfg.data.classes), list(cfg.data.challenges)) == (["MEL", "NV", "SK"], ["isic2017_part3"])
    metrics = train(cfg)
    truth, predictions = (
        pd.read_csv(run / CHALLENGE_DIR / f"isic2017_part3_{kind}.csv") for kind in ("truth", "predictions")
    )
    assert list(predictions.columns) == ["image", "melanoma", "seborrheic_keratosis"]
    val = pd.read_csv(run / "val_predictions.csv")
    assert list(val.columns) == ["image", "MEL", "NV", "SK", "fold"]
    assert metrics["val/isic2017_part3/scored_images"] == len(truth) == len(val) == 430  # fold 0 of 2,150
    official = official_score("isic2017_part3", truth, predictions, tmp_path)
    assert abs(metrics["val/isic2017_part3/mean_auc"] - official) <= HEADLINE_TOLERANCE


@pytest.mark.slow  # ~4 min on 2 CPU cores: two short epochs over the real ISIC 2018 images at 64 px
def test_the_task3_recipe_predicts_akiec_and_monitors_the_scorers_value(
    compose_train, shared_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """experiment=isic2018_task3 on the shared images: AKIEC is a class it predicts (recall > 0 on the validation
    fold), and the metric it monitors is what isic-challenge-scoring computes from the files the run wrote."""
    from melanoma_lit.train import CHALLENGE_DIR, train

    run = tmp_path / "run"
    cfg = compose_train(
        "experiment=isic2018_task3",
        f"paths.data_dir={shared_data}",
        "backbone=resnet18",
        "backbone.pretrained=false",
        "optimizer.layer_decay=1.0",
        "data.input_size=64",
        "trainer=cpu",
        "trainer.precision=32-true",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=80",
        "callbacks.early_stopping=null",
        "data.num_workers=1",
        f"paths.output_dir={run}",
        f"paths.cache_dir={cache_dir}",
    )
    assert cfg.monitor == "val/isic2018_task3/balanced_multiclass_accuracy"
    metrics = train(cfg)
    truth_file = run / CHALLENGE_DIR / "isic2018_task3_truth.csv"
    predictions_file = run / CHALLENGE_DIR / "isic2018_task3_predictions.csv"
    official = ClassificationScore.from_file(truth_file, predictions_file, ClassificationMetric.BALANCED_ACCURACY)
    assert abs(metrics[cfg.monitor] - official.overall) <= HEADLINE_TOLERANCE
    assert metrics["val/isic2018_task3/scored_images"] == len(pd.read_csv(truth_file)) == 2_004
    truth, predictions = (pd.read_csv(path, index_col="image") for path in (truth_file, predictions_file))
    akiec = truth["AKIEC"] == 1
    predicted = predictions.loc[truth.index].to_numpy().argmax(axis=1)  # Task 3 decides by the argmax
    assert (predicted[akiec.to_numpy()] == list(truth.columns).index("AKIEC")).sum() > 0  # AKIEC recall > 0


def test_the_merged_recipe_monitors_isic2019s_headline_as_the_scorer_computes_it(
    compose_train, shared_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """experiment=isic2019_task1 on the merged shared data (2019-only images absent): a short real run whose
    monitored value is what the 2019 scorer computes from the truth and predictions files the run wrote."""
    from melanoma_lit.train import CHALLENGE_DIR, train

    run = tmp_path / "run"
    cfg = compose_train(
        "experiment=isic2019_task1",
        f"paths.data_dir={shared_data}",
        "data.allow_missing=true",
        "debug=limit",
        "trainer.limit_val_batches=24",
        "backbone=resnet18",
        "backbone.pretrained=false",
        "optimizer.layer_decay=1.0",
        "data.input_size=32",
        "trainer=cpu",
        "trainer.precision=32-true",
        "data.num_workers=0",
        f"paths.output_dir={run}",
        f"paths.cache_dir={cache_dir}",
    )
    assert (cfg.data.name, list(cfg.data.challenges)) == ("isic_merged", ["isic2019_task1"])  # debug names the task
    assert cfg.monitor == "val/isic2019_task1/balanced_multiclass_accuracy"
    metrics = train(cfg)
    truth, predictions = (
        pd.read_csv(run / CHALLENGE_DIR / f"isic2019_task1_{kind}.csv") for kind in ("truth", "predictions")
    )
    assert list(predictions.columns) == ["image", *CHALLENGES["isic2019_task1"].columns, "UNK"]
    assert metrics["val/isic2019_task1/scored_images"] == len(truth) == len(pd.read_csv(run / "val_predictions.csv"))
    official = official_score("isic2019_task1", truth, predictions, tmp_path)
    assert abs(metrics[cfg.monitor] - official) <= HEADLINE_TOLERANCE
