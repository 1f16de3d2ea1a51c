"""Temperature scaling, trained for real: fitted on the validation fold, stored in best.ckpt, applied by evaluate,
predict and the exported model; ranking metrics unchanged; checkpoints written before it predict as they did."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.evaluate import evaluate
from melanoma_lit.export import export_checkpoint, run_exported
from melanoma_lit.inference.predictions import ImageFiles
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.models.temperature import fit_temperature, store_temperature
from melanoma_lit.predict import predict
from melanoma_lit.train import train
from tests.checkpoints import train_tiny_checkpoint
from tests.conftest import SMALL_SYNTHETIC

CLASSES = list(ISIC_CLASSES)
RANKING_TOLERANCE = 1e-9
CSV_ROUNDING = 5e-7  # val_predictions.csv holds 6 decimals


@pytest.fixture(scope="module", params=["global", "per_class"])
def calibrated_run(request, tmp_path_factory, cache_dir) -> tuple[str, Path]:
    """A tiny synthetic run whose temperature was fitted after training, in each mode."""
    run = train_tiny_checkpoint(tmp_path_factory.mktemp(request.param), cache_dir, f"model.temperature={request.param}")
    return request.param, run


def _evaluate(compose_config, checkpoint: Path, output_dir: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_config("evaluate", f"ckpt={checkpoint}", *SMALL_SYNTHETIC, "data.num_workers=0", *overrides)
    cfg.paths.output_dir = str(output_dir)
    return evaluate(cfg)


def test_temperature_lowers_the_validation_nll_and_keeps_every_per_class_auc(
    calibrated_run, compose_config, tmp_path
) -> None:
    mode, run = calibrated_run
    summary = json.loads((run / "metrics.json").read_text())
    report = summary["calibration"]
    temperature = np.array([report["temperature"][c] for c in CLASSES])
    assert report["temperature_mode"] == mode and not np.allclose(temperature, 1.0)
    assert (len(set(temperature.tolist())) == 1) == (mode == "global")
    assert report["after"]["nll"] < report["before"]["nll"]
    assert summary["metrics"]["val/nll"] == pytest.approx(report["after"]["nll"], abs=1e-12)
    best = run / "checkpoints" / "best.ckpt"
    stored = LesionClassifier.from_checkpoint(best).temperature.numpy()
    np.testing.assert_array_equal(stored, temperature.astype(np.float32))

    uncalibrated = tmp_path / "uncalibrated.ckpt"
    shutil.copyfile(best, uncalibrated)
    store_temperature(uncalibrated, torch.ones(len(CLASSES)))
    before = _evaluate(compose_config, uncalibrated, tmp_path / "before")
    after = _evaluate(compose_config, best, tmp_path / "after")
    assert before["val/nll"] == pytest.approx(report["before"]["nll"], abs=1e-6)
    assert after["val/nll"] == pytest.approx(report["after"]["nll"], abs=1e-6) and after["val/nll"] < before["val/nll"]
    for cls in CLASSES:
        for metric in ("auc", "ap", "auc_sens80", "recall", "specificity"):  # ranking and p > 0.5 alike
            key = f"val/{metric}/{cls}"
            assert after[key] == pytest.approx(before[key], abs=RANKING_TOLERANCE, nan_ok=True), key
    if mode == "global":  # one T keeps the argmax across classes
        assert after["val/decided_balanced_accuracy"] == before["val/decided_balanced_accuracy"]

    # val_predictions.csv holds what evaluate of best.ckpt gives: the calibrated probabilities
    ours = pd.read_csv(tmp_path / "after" / "predictions.csv")
    theirs = pd.read_csv(run / "val_predictions.csv")
    np.testing.assert_allclose(ours[CLASSES], theirs[CLASSES], atol=CSV_ROUNDING)
    written = json.loads((tmp_path / "after" / "metrics.json").read_text())["temperature"]
    assert written == {str(best): dict(zip(CLASSES, stored.tolist(), strict=True))}
    assert (tmp_path / "after" / "reliability.png").stat().st_size > 10_000


def test_exported_model_divides_by_the_temperature(calibrated_run, synthetic_images, tmp_path) -> None:
    _, run = calibrated_run
    model = LesionClassifier.from_checkpoint(run / "checkpoints" / "best.ckpt").eval()
    dataset = ImageFiles(synthetic_images[:6], model.preprocessing)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.inference_mode():
        logits = model(images)
    expected = torch.sigmoid(logits / model.temperature).numpy()
    assert np.abs(expected - torch.sigmoid(logits).numpy()).max() > 1e-2  # T = 1 would be told apart
    for fmt in ("onnx", "torchscript"):
        result = export_checkpoint(run, fmt, tmp_path / fmt)  # its own check against predict_proba, T included
        assert result.max_abs_difference < 1e-4
        np.testing.assert_allclose(run_exported(result.model_path, images.numpy()), expected, atol=1e-4, rtol=0)
        manifest = json.loads(result.preprocessing_path.read_text())
        assert manifest["temperature"] == dict(zip(CLASSES, model.temperature.tolist(), strict=True))


def test_fit_recovers_the_temperature_that_made_the_logits_overconfident() -> None:
    """Labels drawn from sigmoid(z); the model reports 3z for class 0 and z/2 for class 1: T = 3 and 1/2."""
    generator = torch.Generator().manual_seed(3)
    calibrated = 2.0 * torch.randn(4000, 3, generator=generator)
    truth = (torch.rand(4000, 3, generator=generator) < torch.sigmoid(calibrated)).float()
    logits = calibrated * torch.tensor([3.0, 0.5, 1.0])
    known = torch.ones_like(truth)
    known[:, 2] = 0  # a class without a known label keeps T = 1 per class
    per_class = fit_temperature(logits, truth, known, "per_class")
    np.testing.assert_allclose(per_class[:2].numpy(), [3.0, 0.5], rtol=0.1)
    assert per_class[2] == 1
    shared = fit_temperature(logits, truth, known, "global")
    assert len(set(shared.tolist())) == 1 and 0.5 < shared[0] < 3.0
    assert torch.equal(shared, fit_temperature(logits, truth, known, "global"))  # deterministic
    assert torch.equal(fit_temperature(logits, truth, known, "none"), torch.ones(3))


def test_no_validation_fold_leaves_the_temperature_at_one(compose_train, tmp_path, caplog) -> None:
    cfg = compose_train(
        "debug=limit", "data.input_size=64", *SMALL_SYNTHETIC, "data.fold=all", "monitor=train/loss", "monitor_mode=min"
    )
    with caplog.at_level(logging.INFO, logger="melanoma_lit.train"):
        train(cfg)
    assert [r.getMessage() for r in caplog.records if "temperature" in r.getMessage()] == [
        "temperature scaling: data.fold=all leaves no validation fold to fit it on, so T stays 1"
    ]
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert [path.name for path in checkpoints] == ["best.ckpt", "last.ckpt"]
    for checkpoint in checkpoints:
        assert torch.equal(LesionClassifier.from_checkpoint(checkpoint).temperature, torch.ones(len(CLASSES)))


def test_checkpoint_written_before_temperature_scaling_predicts_as_before(
    pre_calibration_run, compose_config, tmp_path
) -> None:
    """The old run's own val_predictions.csv, reproduced by evaluate and predict with T = 1."""
    best = pre_calibration_run / "checkpoints" / "best.ckpt"
    assert "temperature" not in torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(LesionClassifier.from_checkpoint(best).temperature, torch.ones(len(CLASSES)))
    old = OmegaConf.load(pre_calibration_run / "config.yaml")
    theirs = pd.read_csv(pre_calibration_run / "val_predictions.csv")
    _evaluate(compose_config, best, tmp_path / "eval", f"paths.cache_dir={old.paths.cache_dir}")
    evaluated = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert evaluated["image"].tolist() == theirs["image"].tolist()
    np.testing.assert_allclose(evaluated[CLASSES], theirs[CLASSES], atol=CSV_ROUNDING)

    images = sorted(Path(old.paths.cache_dir).rglob("*.jpg"))
    by_id = {path.stem: str(path) for path in images}
    listing = tmp_path / "inputs.csv"
    pd.DataFrame({"image": theirs["image"], "path": theirs["image"].map(by_id)}).to_csv(listing, index=False)
    cfg = compose_config(
        "predict", f"ckpt={best}", f"input={listing}", f"predictions_file={tmp_path / 'predicted.csv'}", "num_workers=0"
    )
    predicted = pd.read_csv(predict(cfg))
    assert predicted["image"].tolist() == theirs["image"].tolist()
    np.testing.assert_allclose(predicted[CLASSES], theirs[CLASSES], atol=CSV_ROUNDING)
