"""Metadata fusion (model.metadata): the encoding, the columns reaching the head, a label only the metadata carries,
sources and inputs without a column, export with a second input, and checkpoints from before the feature."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from melanoma_lit.data.metadata import SITES, MetadataEncoder
from melanoma_lit.data.table import META_COLUMNS
from melanoma_lit.errors import ConfigError
from melanoma_lit.evaluate import evaluate
from melanoma_lit.export import export_checkpoint, run_exported
from melanoma_lit.inference.gradcam import explain
from melanoma_lit.inference.predictions import ImageFiles, ensemble_probabilities
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.predict import predict
from melanoma_lit.train import build_datamodule, train
from tests.checkpoints import train_tiny_checkpoint
from tests.fake_isic import write_isic2018

FUSED = "model.metadata=[age,sex,site]"


@pytest.fixture(scope="session")
def fused_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The tiny synthetic run (tests.checkpoints) with age, sex and site fused."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("fused"), cache_dir, FUSED)


def _batch(model: LesionClassifier, paths: list[str]) -> torch.Tensor:
    files = ImageFiles(paths, model.preprocessing)
    return torch.stack([files[i]["image"] for i in range(len(files))])


def test_encoding_maps_empty_unlisted_and_absent_values_to_unknown() -> None:
    encoder = MetadataEncoder(("site", "age", "sex"), age_mean=50.0, age_std=10.0)
    assert encoder.columns == META_COLUMNS  # table order, whatever order the config lists them in
    assert encoder.width == 2 + 3 + len(SITES) + 1
    frame = pd.DataFrame(
        {"age": [70.0, np.nan, "unknown"], "sex": ["male", "", "other"], "site": ["Face ", "moon", None]}
    )
    encoded = pd.DataFrame(encoder.encode(frame), columns=encoder.feature_names())
    assert encoded["age"].tolist() == [2.0, 0.0, 0.0] and encoded["age_missing"].tolist() == [0.0, 1.0, 1.0]
    assert encoded["sex=male"].tolist() == [1.0, 0.0, 0.0] and encoded["sex=unknown"].tolist() == [0.0, 1.0, 1.0]
    assert encoded["site=face"].tolist() == [1.0, 0.0, 0.0] and encoded["site=unknown"].tolist() == [0.0, 1.0, 1.0]
    assert (encoded.filter(like="sex=").sum(axis=1) == 1).all() and (
        encoded.filter(like="site=").sum(axis=1) == 1
    ).all()
    without_site = encoder.encode(frame.drop(columns="site"))  # a source without the column: unknown, every row kept
    assert len(without_site) == 3 and (without_site[:, encoder.feature_names().index("site=unknown")] == 1).all()
    assert MetadataEncoder.from_settings(json.loads(json.dumps(encoder.settings()))) == encoder
    with pytest.raises(ConfigError, match=r"model\.metadata=\['age', 'weight'\].*age, sex, site"):
        MetadataEncoder(("age", "weight"))


def test_metadata_reaches_the_head_and_a_batch_without_it_is_an_error(fused_run, synthetic_images) -> None:
    model = LesionClassifier.from_checkpoint(fused_run / "checkpoints" / "best.ckpt").eval()  # no config needed
    encoder = model.metadata_encoder
    assert encoder is not None and encoder.columns == ("age", "sex", "site")
    assert model.hparams.metadata["age_mean"] == encoder.age_mean and encoder.age_std > 0
    images = _batch(model, synthetic_images[:2]).repeat(2, 1, 1, 1)  # the same two images twice
    patients = pd.DataFrame({"age": [30, 30, 80, 80], "sex": ["female"] * 2 + ["male"] * 2, "site": ["face"] * 4})
    with torch.inference_mode():
        logits = model(images, torch.from_numpy(encoder.encode(patients)))
    assert (logits[:2] - logits[2:]).abs().min() > 1e-4  # another patient, another output for the same image
    with pytest.raises(ConfigError, match=r"fuses patient metadata.*pass the encoded metadata"):
        model(images)


def test_grad_cam_of_a_fused_model_reads_unknown_metadata_unless_given(fused_run, synthetic_images) -> None:
    model = LesionClassifier.from_checkpoint(fused_run / "checkpoints" / "best.ckpt").eval()
    images = _batch(model, synthetic_images[:2])
    unknown = torch.from_numpy(model.metadata_encoder.encode(pd.DataFrame(index=range(2))))
    default, explicit = explain(model, images), explain(model, images, metadata=unknown)
    assert default.cams.shape == (2, 64, 64)
    np.testing.assert_array_equal(default.probs, explicit.probs)
    np.testing.assert_array_equal(default.cams, explicit.cams)
    patients = pd.DataFrame({"age": [85, 85], "sex": ["male", "male"], "site": ["face", "face"]})
    given = explain(model, images, metadata=torch.from_numpy(model.metadata_encoder.encode(patients)))
    assert np.abs(given.probs - default.probs).max() > 1e-6


def _noise_set_with_label_in_sex(root: Path, n: int = 160) -> Path:
    """ISIC 2018 layout: MEL for male patients, NV for female ones, images of one noise distribution for both (one
    lesion each), age and site random."""
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    labels = dict(zip(ids, rng.permutation(["MEL", "NV"] * (n // 2)), strict=True))
    write_isic2018(root, labels)
    for image_id in ids:
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "ISIC2018_Task3_Training_Input" / f"{image_id}.jpg")
    pd.DataFrame(
        {
            "lesion_id": [f"HAM_{i:07d}" for i in range(n)],
            "image_id": ids,
            "dx": ["mel" if labels[i] == "MEL" else "nv" for i in ids],
            "dx_type": "histo",
            "age": rng.choice(np.arange(20, 85, 5), n).astype(float),
            "sex": ["male" if labels[i] == "MEL" else "female" for i in ids],
            "localization": rng.choice(["back", "face", "lower extremity"], n),
            "dataset": "synthetic",
        }
    ).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def test_fused_model_learns_a_label_only_the_metadata_carries(compose_train, tmp_path) -> None:
    """The fused model ranks the validation fold perfectly from the sex column; the image-only model, seeing noise,
    ranks it by chance (its best epoch by the validation monitor, so a little above 0.5)."""
    root = _noise_set_with_label_in_sex(tmp_path / "isic2018")
    melanoma_auc = {}
    for arm, metadata in (("image_only", "[]"), ("fused", "[age,sex,site]")):
        cfg = compose_train(
            "data=isic2018",
            f"data.root={root}",
            "backbone.pretrained=false",
            "data.input_size=32",
            "data.batch_size=16",
            "data.num_workers=0",
            "trainer=cpu",
            "trainer.max_epochs=5",
            "optimizer.lr=0.01",
            "callbacks.early_stopping=null",
            f"model.metadata={metadata}",
        )
        cfg.paths.output_dir = str(tmp_path / arm)
        metrics = train(cfg)
        assert json.loads((tmp_path / arm / "metrics.json").read_text())["data"]["val"] == 32
        melanoma_auc[arm] = metrics["val/auc/MEL"]
    assert melanoma_auc["fused"] > 0.95, melanoma_auc
    assert 0.25 < melanoma_auc["image_only"] < 0.75, melanoma_auc


def test_a_source_without_a_column_trains_evaluates_and_predicts_it_as_unknown(
    shared_data, compose_config, compose_train, tmp_path, cache_dir, caplog
) -> None:
    """ISIC 2017 gives age and sex but no site: every row is kept, with site unknown."""
    data = ("data=isic2017", f"paths.data_dir={shared_data}", "data.num_workers=0")
    datamodule = build_datamodule(compose_train(*data, FUSED, "backbone.pretrained=false"))
    datamodule.setup()
    train_set = datamodule._dataset(datamodule.splits.train, train=False)
    encoder = datamodule.metadata_encoder
    assert len(train_set.metadata) == len(datamodule.splits.train) == len(train_set)
    features = pd.DataFrame(train_set.metadata.numpy(), columns=encoder.feature_names())
    assert (features["site=unknown"] == 1).all()
    assert features["sex=unknown"].mean() < 0.5 and features["age_missing"].mean() < 0.5  # 2017 has these
    run = train_tiny_checkpoint(tmp_path, cache_dir, *data, FUSED, "data.fold=official", "backbone.pretrained=false")

    evaluate(compose_config("evaluate", f"ckpt={run}", *data, "data.fold=official"))
    evaluated = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(evaluated) == 150 and evaluated.drop(columns="image_id").notna().all().all()

    images = sorted((shared_data / "isic2017" / "ISIC-2017_Validation_Data").glob("ISIC_*.jpg"))[:5]
    csv = tmp_path / "patients.csv"
    pd.DataFrame({"path": images, "age": [55, "", 30, 70, 40], "sex": ["male", "female", "", "male", "x"]}).to_csv(
        csv, index=False
    )
    with caplog.at_level(logging.INFO, logger="melanoma_lit.predict"):
        written = predict(
            compose_config(
                "predict",
                f"ckpt={run}",
                f"input={csv}",
                "predictions_file=" + str(tmp_path / "from_csv.csv"),
                "num_workers=0",
            )
        )
    assert "input=" + str(csv) + " has no column site" in caplog.text
    from_csv = pd.read_csv(written)
    assert len(from_csv) == 5 and from_csv.drop(columns="image").notna().all().all()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="melanoma_lit.predict"):
        predict(
            compose_config(
                "predict",
                f"ckpt={run}",
                f"input={images[0].parent}",
                "predictions_file=" + str(tmp_path / "from_folder.csv"),
                "num_workers=0",
            )
        )
    assert "is a folder, which gives none: every image is 'unknown' for each" in caplog.text
    model = LesionClassifier.from_checkpoint(run / "checkpoints" / "best.ckpt").eval()
    unknown = ensemble_probabilities([model], [str(p) for p in images]).probs  # no table: every column unknown
    by_csv = ensemble_probabilities([model], [str(p) for p in images], metadata=pd.read_csv(csv)).probs
    assert np.abs(unknown - by_csv).max() > 1e-6


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_of_a_fused_model_takes_the_metadata_as_a_second_input(fused_run, synthetic_images, tmp_path, fmt):
    result = export_checkpoint(fused_run, fmt, tmp_path)  # checks the export against the checkpoint itself
    assert result.max_abs_difference < 1e-4
    manifest = json.loads(result.preprocessing_path.read_text())["metadata"]
    model = LesionClassifier.from_checkpoint(fused_run / "checkpoints" / "best.ckpt").eval()
    encoder = model.metadata_encoder
    assert manifest["name"] == "metadata" and manifest["shape"] == ["batch", encoder.width]
    assert manifest["features"] == encoder.feature_names() and manifest["age_mean"] == encoder.age_mean
    images = _batch(model, synthetic_images[:3])
    patients = pd.DataFrame({"age": [20, np.nan, 85], "sex": ["male", "female", ""], "site": ["face", "", "torso"]})
    metadata = torch.from_numpy(encoder.encode(patients))
    with torch.inference_mode():
        expected = model.predict_proba(images, tta=1, metadata=metadata).numpy()
    np.testing.assert_allclose(run_exported(result.model_path, images.numpy(), metadata.numpy()), expected, atol=1e-4)


def test_checkpoint_from_before_metadata_fusion_loads_and_predicts_as_before(pre_calibration_run) -> None:
    """A checkpoint written by the package before issue 17: no metadata settings, the image-only head's weights,
    and the probabilities its own training run wrote for its validation fold."""
    checkpoint = torch.load(pre_calibration_run / "checkpoints" / "best.ckpt", weights_only=False)
    assert "metadata" not in checkpoint["hyper_parameters"]
    model = LesionClassifier.from_checkpoint(pre_calibration_run / "checkpoints" / "best.ckpt").eval()
    assert model.metadata_encoder is None and model.net.head.metadata is None
    # the image-only head's keys; the temperature (T = 1, see test_calibration) is the one it lacks
    assert sorted(model.state_dict()) == sorted([*checkpoint["state_dict"], "temperature"])
    assert model.temperature.eq(1).all()
    before = pd.read_csv(pre_calibration_run / "val_predictions.csv")
    cache = Path(OmegaConf.load(pre_calibration_run / "config.yaml").paths.cache_dir)
    paths = {path.stem: str(path) for path in cache.rglob("*.jpg")}
    now = ensemble_probabilities([model], [paths[image] for image in before["image"]], batch_size=8)
    classes = model.classes
    np.testing.assert_allclose(now.probs, before[classes].to_numpy(), atol=2e-6)
    assert len(before) == 19  # fold 0 of the 96 synthetic images
