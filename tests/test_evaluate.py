"""evaluate: official-scorer parity on the ISIC 2017 test set, ensembles, the validation fold, label checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore
from PIL import Image

from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError
from melanoma_lit.evaluate import evaluate
from melanoma_lit.inference.predictions import (
    ImageFiles,
    check_format,
    default_format,
    ensemble_probabilities,
    load_models,
    resolve_checkpoints,
    submission_table,
)
from tests.checkpoints import train_tiny_checkpoint
from tests.conftest import REPO_ROOT, SMALL_SYNTHETIC

ISIC2017_TRUTH = "isic2017/ISIC-2017_Test_v2_Part3_GroundTruth.csv"


def _official_2017_scores(shared_data: Path, predictions_csv: Path) -> pd.DataFrame:
    """isic-challenge-scoring 5.6 on the ISIC 2017 Part 3 files, whose id column is image_id, not image."""
    truth = pd.read_csv(shared_data / ISIC2017_TRUTH).rename(columns={"image_id": "image"}).set_index("image")
    predicted = pd.read_csv(predictions_csv).rename(columns={"image_id": "image"}).set_index("image")
    truth, predicted = truth.sort_index(), predicted.loc[truth.index].sort_index()
    weights = pd.DataFrame({"score_weight": 1.0, "validation_weight": 1.0}, index=truth.index)
    return ClassificationScore(truth, predicted, weights, ClassificationMetric.AUC).per_category


def _check_isic2017_evaluation(shared_data: Path, output_dir: Path, metrics: dict[str, float]) -> None:
    submission = pd.read_csv(output_dir / "predictions.csv")
    assert list(submission.columns) == ["image_id", "melanoma", "seborrheic_keratosis"]
    truth = pd.read_csv(shared_data / ISIC2017_TRUTH)
    assert len(submission) == 600 and set(submission["image_id"]) == set(truth["image_id"])
    official = _official_2017_scores(shared_data, output_dir / "predictions.csv")
    assert metrics["test/mel_auc"] == official.loc["melanoma", "auc"]  # bit-identical: the CSV holds full precision
    assert metrics["test/auc/SK"] == official.loc["seborrheic_keratosis", "auc"]
    part3 = (official.loc["melanoma", "auc"] + official.loc["seborrheic_keratosis", "auc"]) / 2
    assert metrics["test/isic2017_part3/mean_auc"] == pytest.approx(part3, abs=1e-12)
    summary = json.loads((output_dir / "metrics.json").read_text())
    assert summary["metrics"]["test/mel_auc"] == metrics["test/mel_auc"]
    assert summary["images"] == 600 and summary["predictions"] == {"path": "predictions.csv", "format": "isic2017"}
    for plot in ("roc.png", "confusion_matrix.png"):
        with Image.open(output_dir / plot) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_isic2017_test_set_mel_auc_equals_the_official_scorer(shared_data, tiny_run, compose_config) -> None:
    """A model of the eight 2019 classes scored on Part 3's label set: its BKL output stands for SK."""
    cfg = compose_config(
        "evaluate",
        f"ckpt={tiny_run}",
        "data=isic2017",
        f"paths.data_dir={shared_data}",
        "data.test=isic2017_test",
        "data.num_workers=0",
    )
    metrics = evaluate(cfg)
    _check_isic2017_evaluation(shared_data, Path(cfg.paths.output_dir), metrics)


@pytest.mark.slow
def test_isic2017_trained_checkpoint_with_tta8_matches_the_official_scorer(
    shared_data, cache_dir, compose_config, tmp_path_factory
) -> None:
    run = train_tiny_checkpoint(
        tmp_path_factory.mktemp("isic2017"),
        cache_dir,
        "data=isic2017",
        f"paths.data_dir={shared_data}",
    )
    cfg = compose_config(
        "evaluate", f"ckpt={run}", "data=isic2017", f"paths.data_dir={shared_data}", "data.test=isic2017_test", "tta=8"
    )
    metrics = evaluate(cfg)
    _check_isic2017_evaluation(shared_data, Path(cfg.paths.output_dir), metrics)
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["tta"] == 8


def test_validation_fold_by_default_reproduces_the_training_run(tiny_run, compose_config) -> None:
    cfg = compose_config("evaluate", f"ckpt={tiny_run}", *SMALL_SYNTHETIC, "data.batch_size=8", "data.num_workers=0")
    metrics = evaluate(cfg)
    trained = json.loads((tiny_run / "metrics.json").read_text())
    assert trained["data"]["val"] == len(pd.read_csv(tiny_run / "val_predictions.csv"))  # training scored every row
    trained = trained["metrics"]
    for key in ("val/auc_macro", "val/mel_auc", "val/decided_balanced_accuracy", "val/ap_macro"):
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key
    ours = pd.read_csv(Path(cfg.paths.output_dir) / "predictions.csv")
    theirs = pd.read_csv(tiny_run / "val_predictions.csv")
    assert list(ours.columns) == ["image", *ISIC_CLASSES, "UNK"] and (ours["UNK"] == 0).all()
    assert ours["image"].tolist() == theirs["image"].tolist()
    np.testing.assert_allclose(ours[list(ISIC_CLASSES)], theirs[list(ISIC_CLASSES)], atol=2e-6)


def test_multirun_folder_is_an_ensemble_of_mean_probabilities(tiny_run, synthetic_images, tmp_path) -> None:
    multirun = tmp_path / "multirun"
    first, second = multirun / "0-fold0" / "checkpoints", multirun / "1-fold1" / "checkpoints"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    shutil.copy(tiny_run / "checkpoints" / "best.ckpt", first / "best.ckpt")
    checkpoint = torch.load(tiny_run / "checkpoints" / "best.ckpt", weights_only=False)
    last_bias = [key for key in checkpoint["state_dict"] if key.startswith("net.head.") and key.endswith("bias")][-1]
    checkpoint["state_dict"][last_bias] += torch.linspace(-1.0, 1.0, len(ISIC_CLASSES))
    torch.save(checkpoint, second / "best.ckpt")
    shutil.copy(tiny_run / "checkpoints" / "last.ckpt", second / "last.ckpt")

    paths = resolve_checkpoints(multirun)
    assert paths == [first / "best.ckpt", second / "best.ckpt"]
    models = load_models(paths, torch.device("cpu"))
    images = synthetic_images[:6]
    singles = [ensemble_probabilities([model], images).probs for model in models]
    assert np.abs(singles[0] - singles[1]).max() > 0.05
    ensemble = ensemble_probabilities(models, images, batch_size=4)
    np.testing.assert_allclose(ensemble.probs, (singles[0] + singles[1]) / 2, atol=1e-7)
    assert ensemble.ok.all() and ensemble.errors.empty


def test_tta_override_reaches_every_model(tiny_run, synthetic_images) -> None:
    (model,) = load_models(resolve_checkpoints(tiny_run), torch.device("cpu"))
    dataset = ImageFiles(synthetic_images[:2], model.preprocessing)
    batch = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.inference_mode():
        expected = model.predict_proba(batch, tta=8).double().numpy()
        plain = model.predict_proba(batch, tta=1).double().numpy()
    got = ensemble_probabilities([model], synthetic_images[:2], tta=8).probs
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - plain).max() > 1e-6


def test_checkpoint_resolution_rules(tmp_path) -> None:
    file = tmp_path / "model.ckpt"
    file.touch()
    only_last = tmp_path / "run_a" / "checkpoints"
    only_last.mkdir(parents=True)
    (only_last / "last.ckpt").touch()
    assert resolve_checkpoints(str(file)) == [file]
    assert resolve_checkpoints(tmp_path / "run_a") == [only_last / "last.ckpt"]
    assert resolve_checkpoints([file, tmp_path / "run_a"]) == [file, only_last / "last.ckpt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no checkpoints/best\.ckpt"):
        resolve_checkpoints(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_checkpoints(tmp_path / "absent.ckpt")


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny synthetic run that learns only MEL, NV and BKL."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("three-classes"), cache_dir, "data.classes=[MEL,NV,BKL]")


def test_a_label_set_the_model_covers_is_scored_in_its_order_and_one_it_does_not_is_refused(
    three_class_run, compose_config
) -> None:
    evaluation = (*SMALL_SYNTHETIC, "data.batch_size=8", "data.num_workers=0")
    metrics = evaluate(compose_config("evaluate", f"ckpt={three_class_run}", *evaluation, "data.classes=[BKL,MEL]"))
    trained = json.loads((three_class_run / "metrics.json").read_text())["metrics"]
    for cls in ("BKL", "MEL"):
        assert metrics[f"val/auc/{cls}"] == pytest.approx(trained[f"val/auc/{cls}"], abs=1e-6), cls
    assert "val/auc/NV" not in metrics
    cfg = compose_config("evaluate", f"ckpt={three_class_run}", *evaluation)  # the eight 2019 classes
    with pytest.raises(
        ConfigError, match=r"predicts \['MEL', 'NV', 'BKL'\] .*no output for \['BCC', 'AK', 'DF', 'VASC', 'SCC'\]"
    ):
        evaluate(cfg)


@pytest.mark.slow  # a subprocess: ~10 s of imports
def test_cli_reports_a_label_mismatch_in_one_paragraph(three_class_run, tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "melanoma_lit.evaluate",
        f"ckpt={three_class_run}",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Error: the checkpoint predicts" in result.stderr and "Traceback" not in result.stderr


def test_multirun_over_checkpoints_scores_each_in_its_job_folder(tiny_run, cache_dir, tmp_path) -> None:
    """``evaluate -m ckpt=a,b``: the sweep's job folders are named without training keys (no backbone, no fold)."""
    checkpoints = [tiny_run / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "melanoma_lit.evaluate",
        "-m",
        f"ckpt={','.join(str(path) for path in checkpoints)}",
        *SMALL_SYNTHETIC,
        "data.batch_size=8",
        "data.num_workers=0",
        f"paths.cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for num, checkpoint in enumerate(checkpoints):
        job = sweep_dir / str(num)
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["checkpoints"] == [str(checkpoint)] and summary["evaluated_on"].startswith("fold 0")
        assert len(pd.read_csv(job / "predictions.csv")) == summary["images"] > 0
        assert (job / "roc.png").is_file() and (job / "confusion_matrix.png").is_file()


def test_submission_formats() -> None:
    classes = list(ISIC_CLASSES)
    probs = np.array([[0.9, 0.1, 0.2, 0.7, 0.3, 0.0, 0.1, 0.6], [0.1, 0.8, 0.0, 0.05, 0.4, 0.1, 0.2, 0.1]])
    ids = ["ISIC_1", "ISIC_2"]
    year2017 = submission_table(ids, probs, classes, "isic2017")
    assert list(year2017.columns) == ["image_id", "melanoma", "seborrheic_keratosis"]
    assert year2017["melanoma"].tolist() == [0.9, 0.1] and year2017["seborrheic_keratosis"].tolist() == [0.3, 0.4]
    year2018 = submission_table(ids, probs, classes, "isic2018")
    assert list(year2018.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert year2018["AKIEC"].tolist() == pytest.approx([1.0, 0.15])  # min(1, AK + SCC)
    year2019 = submission_table(ids, probs, classes, "isic2019")
    assert list(year2019.columns) == ["image", *ISIC_CLASSES, "UNK"] and (year2019["UNK"] == 0).all()
    np.testing.assert_array_equal(year2019[classes].to_numpy(), probs)
    generic = submission_table(ids, probs[:, :2], ["NV", "MEL"], "generic")
    assert list(generic.columns) == ["image", "NV", "MEL"] and generic["MEL"].tolist() == [0.1, 0.8]
    with pytest.raises(ConfigError, match=r"needs probabilities for \['SK'\]"):
        submission_table(ids, probs[:, :2], ["MEL", "NV"], "isic2017")
    own_sk = submission_table(ids, np.column_stack([probs[:, :2], [0.25, 0.5]]), ["MEL", "NV", "SK"], "isic2017")
    assert own_sk["seborrheic_keratosis"].tolist() == [0.25, 0.5]  # a model's own SK before its parent's BKL
    year2020 = submission_table(ids, probs[:, :1], ["MEL"], "isic2020")
    assert list(year2020.columns) == ["image_name", "target"] and year2020["target"].tolist() == [0.9, 0.1]
    with pytest.raises(ConfigError, match="format=csv: choose one of"):
        check_format("csv", classes)
    assert default_format(classes, "isic2017") == "isic2017"
    assert default_format(classes, "isic2018") == "isic2018"
    assert default_format(classes, None) == default_format(classes, "folder") == "isic2019"
    assert default_format(classes, "isic2020") == "isic2020"
    assert default_format(["MEL", "NV"], "isic2018") == "generic"
