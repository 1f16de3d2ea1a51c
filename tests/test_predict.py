"""predict: a folder with unreadable files, CSV inputs, and the errors file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from melanoma_lit.data.images import load_rgb
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.data.transforms import eval_transform
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.predict import errors_path, list_inputs, predict
from tests.conftest import REPO_ROOT


def _expected_probabilities(run: Path, paths: list[Path]) -> np.ndarray:
    """The checkpoint applied by hand: decode, the eval transform, predict_proba."""
    model = LesionClassifier.from_checkpoint(run / "checkpoints" / "best.ckpt").eval()
    transform = eval_transform(model.preprocessing)
    batch = torch.stack([transform(image=load_rgb(path))["image"] for path in paths])
    with torch.inference_mode():
        return model.predict_proba(batch).double().numpy()


@pytest.fixture
def messy_folder(tmp_path: Path, synthetic_images: list[str]) -> tuple[Path, dict[str, Path], list[Path]]:
    """Three good JPEGs (one in a subfolder), a good PNG, a truncated JPEG, a text file named .jpg, and files
    that are not candidates at all (listed in the errors file with that reason): a .txt and a hidden macOS
    resource fork."""
    folder = tmp_path / "incoming"
    (folder / "clinic_b").mkdir(parents=True)
    good = {
        "ISIC_0000001": folder / "ISIC_0000001.jpg",
        "ISIC_0000002": folder / "ISIC_0000002.JPG",
        "clinic_b/lesion_7": folder / "clinic_b" / "lesion_7.jpeg",
        "scan": folder / "scan.png",
    }
    for source, target in zip(synthetic_images[:3], list(good.values())[:3], strict=True):
        shutil.copy(source, target)
    Image.open(synthetic_images[3]).save(good["scan"])
    corrupt = folder / "truncated.jpg"
    corrupt.write_bytes(Path(synthetic_images[4]).read_bytes()[:600])
    not_image = folder / "clinic_b" / "notes.jpg"
    not_image.write_text("patient notes, renamed by mistake\n")
    (folder / "readme.txt").write_text("not a candidate")
    (folder / "._ISIC_0000001.jpg").write_bytes(b"\x00\x05\x16\x07")
    return folder, good, [corrupt, not_image]


def test_folder_with_bad_files_predicts_every_readable_image(tiny_run, messy_folder, tmp_path) -> None:
    folder, good, bad = messy_folder
    output = tmp_path / "out" / "preds.csv"
    command = [
        sys.executable,
        "-m",
        "melanoma_lit.predict",
        f"ckpt={tiny_run}",
        f"input={folder}",
        f"predictions_file={output}",
        "num_workers=2",
        "batch_size=3",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "predicting" in result.stdout + result.stderr  # the progress bar
    predictions = pd.read_csv(output)
    assert list(predictions.columns) == ["image", *ISIC_CLASSES, "UNK"]
    assert sorted(predictions["image"]) == sorted(good)
    assert (predictions["UNK"] == 0).all()
    expected = _expected_probabilities(tiny_run, list(good.values()))
    got = predictions.set_index("image").loc[list(good), list(ISIC_CLASSES)].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)

    errors = pd.read_csv(tmp_path / "out" / "preds.errors.csv")
    assert list(errors.columns) == ["path", "reason"]
    unread = errors[errors["reason"].str.contains("cannot decode image")]
    assert sorted(unread["path"]) == sorted(str(path) for path in bad)
    for row in unread.itertuples():
        assert row.path in row.reason
    # the files that are not candidates are listed too, each with why (nothing under input is silently skipped)
    others = dict(zip(errors["path"], errors["reason"], strict=True))
    assert len(errors) == len(bad) + 2
    assert others[str(folder / "readme.txt")].startswith("not an image file by its suffix")
    assert others[str(folder / "._ISIC_0000001.jpg")].startswith("hidden file")


def test_csv_input_with_a_missing_file_lists_it(tiny_run, synthetic_images, compose_config, tmp_path) -> None:
    images = Path(synthetic_images[0]).parent
    names = [Path(p).stem for p in synthetic_images[:2]]
    listing = tmp_path / "to_predict.csv"
    pd.DataFrame({"image": [*names, "ISIC_9999999"], "age": [30, 40, 50]}).to_csv(listing, index=False)
    cfg = compose_config(
        "predict", f"ckpt={tiny_run}", f"input={listing}", f"image_dir={images}", "num_workers=0", "format=generic"
    )
    output = Path(cfg.paths.output_dir) / "listed.csv"
    cfg.predictions_file = str(output)
    assert predict(cfg) == output
    predictions = pd.read_csv(output)
    assert predictions["image"].tolist() == names and list(predictions.columns) == ["image", *ISIC_CLASSES]
    errors = pd.read_csv(errors_path(output))
    assert errors["path"].tolist() == [str(images / "ISIC_9999999.jpg")]
    assert "not found" in errors["reason"].iloc[0]


def test_csv_columns_define_ids_and_paths(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").touch()
    (tmp_path / "imgs" / "b.jpg").touch()
    by_path = tmp_path / "by_path.csv"
    pd.DataFrame({"path": ["imgs/a.png", str(tmp_path / "imgs" / "b.jpg")]}).to_csv(by_path, index=False)
    listed = list_inputs(by_path)
    assert listed["image"].tolist() == ["imgs/a", str(tmp_path / "imgs" / "b")]
    assert listed["path"].tolist() == [str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs" / "b.jpg")]

    named = tmp_path / "named.csv"
    pd.DataFrame({"image_id": ["a", "b.jpg"], "path": ["imgs/a.png", "imgs/b.jpg"]}).to_csv(named, index=False)
    assert list_inputs(named)["image"].tolist() == ["a", "b"]
    by_name = tmp_path / "by_name.csv"
    pd.DataFrame({"image_id": ["a", "b"]}).to_csv(by_name, index=False)
    assert list_inputs(by_name, tmp_path / "imgs")["path"].tolist() == [
        str(tmp_path / "imgs" / "a.png"),
        str(tmp_path / "imgs" / "b.jpg"),
    ]

    unnamed = tmp_path / "unnamed.csv"
    pd.DataFrame({"file": ["a.png"]}).to_csv(unnamed, index=False)
    with pytest.raises(DataError, match="no column named path or image or image_id"):
        list_inputs(unnamed)
    (tmp_path / "imgs" / "a.jpg").touch()
    with pytest.raises(DataError, match="occur twice"):
        list_inputs(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"not a folder or a \.csv"):
        list_inputs(tmp_path / "imgs" / "a.png")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_inputs(tmp_path / "nothing")


def test_predictions_go_into_the_run_folder_by_default(compose_config, tmp_path: Path) -> None:
    cfg = compose_config("predict", "ckpt=unused.ckpt", f"input={tmp_path}")
    assert cfg.predictions_file == str(tmp_path / "run" / "predictions.csv")  # paths.output_dir, as every command


@pytest.mark.parametrize("name", ["predictions.csv", "predictions.errors.csv"])
def test_earlier_predictions_are_never_overwritten(compose_config, tmp_path: Path, name: str) -> None:
    earlier = tmp_path / name
    earlier.write_text("image,MEL\nISIC_0000000,0.25\n")
    cfg = compose_config(
        "predict", "ckpt=unused.ckpt", f"input={tmp_path}", f"predictions_file={tmp_path / 'predictions.csv'}"
    )
    with pytest.raises(ConfigError, match=rf"{name} already exists: predict never overwrites earlier results"):
        predict(cfg)
    assert earlier.read_text() == "image,MEL\nISIC_0000000,0.25\n"
