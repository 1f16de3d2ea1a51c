"""The data configs, composed as users compose them, give leak-free train/val/test splits on the real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from melanoma_lit.data.build import DataSpec, build_splits
from melanoma_lit.errors import ConfigError
from melanoma_lit.train import build_datamodule


def _spec(compose_train, *overrides: str) -> DataSpec:
    cfg = compose_train(*overrides)
    return DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True))


# Training photos of four ISIC 2017 test lesions, known only from the ISIC 2019 metadata's lesion_id.
SAME_LESION_AS_A_TEST_IMAGE = {
    "ISIC_0013969": "ISIC_0013472",
    "ISIC_0014171": "ISIC_0014103",
    "ISIC_0014187": "ISIC_0014423",
    "ISIC_0013626": "ISIC_0014077",
}


def _lesions_2019(shared_data: Path) -> pd.Series:
    """image id -> lesion id, read here from the official 2019 metadata rather than from the project's table."""
    meta = pd.read_csv(shared_data / "isic2019" / "ISIC_2019_Training_Metadata.csv", dtype=str)
    meta["image"] = meta["image"].str.replace("_downsampled", "", regex=False)
    return meta.dropna(subset=["lesion_id"]).set_index("image")["lesion_id"]


def _train_splits(compose_train, *overrides: str):
    """The splits exactly as the train command builds them (train.build_datamodule, then setup)."""
    datamodule = build_datamodule(compose_train(*overrides))
    datamodule.setup()
    return datamodule.splits


def _assert_no_leak(splits, shared_data: Path) -> None:
    lesions = _lesions_2019(shared_data)
    test_ids = set(splits.test["image_id"])
    test_lesions = set(lesions.reindex(list(test_ids)).dropna())
    for part in (splits.train, splits.val):
        assert not test_ids & set(part["image_id"])
        assert not test_lesions & set(lesions.reindex(part["image_id"]).dropna())


def test_isic2017_test_set_and_its_lesions_leave_the_merged_training_pool(compose_train, shared_data: Path) -> None:
    splits = _train_splits(
        compose_train,
        "data=isic_merged",
        f"paths.data_dir={shared_data}",
        "data.allow_missing=true",
        "data.test=isic2017_test",
    )
    assert len(splits.test) == 600
    assert splits.summary["removed_for_leakage"] == 604  # the 600 test images and 4 photos of their lesions
    assert splits.summary["missing_images_dropped"] == 12_571  # the 2019-only images are not in the shared copy
    assert splits.summary["missing_images_per_source"] == {"isic2019": 12_571}
    assert splits.summary["official_test_in_pool"] == {}
    assert len(splits.train) + len(splits.val) == 12_765 - 604
    kept = set(splits.train["image_id"]) | set(splits.val["image_id"])
    assert not kept & set(SAME_LESION_AS_A_TEST_IMAGE)
    assert set(SAME_LESION_AS_A_TEST_IMAGE.values()) <= set(splits.test["image_id"])
    _assert_no_leak(splits, shared_data)


def test_isic2017_alone_finds_the_2019_lesion_ids_beside_it(compose_train, shared_data: Path) -> None:
    splits = _train_splits(
        compose_train, "data=isic2017", f"data.root={shared_data / 'isic2017'}", "data.test=isic2017_test"
    )
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (2150 - 4, 600)
    assert splits.summary["removed_for_leakage"] == 4
    _assert_no_leak(splits, shared_data)


def test_isic2017_alone_takes_lesion_ids_from_data_lesion_metadata(
    compose_train, shared_data: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "downloads" / "isic2017"  # no ISIC 2019 folder beside it
    alone.parent.mkdir()
    alone.symlink_to(shared_data / "isic2017", target_is_directory=True)
    common = ("data=isic2017", f"data.root={alone}", "data.test=isic2017_test")
    assert _train_splits(compose_train, *common).summary["removed_for_leakage"] == 0  # no lesion id known
    metadata = shared_data / "isic2019" / "ISIC_2019_Training_Metadata.csv"
    splits = _train_splits(compose_train, *common, f"data.lesion_metadata=[{metadata}]")
    assert splits.summary["removed_for_leakage"] == 4
    _assert_no_leak(splits, shared_data)


def test_official_split_uses_the_sources_own_train_and_val(compose_train, shared_data: Path) -> None:
    spec = _spec(compose_train, "data=isic2017", f"data.root={shared_data / 'isic2017'}", "data.fold=official")
    splits = build_splits(spec)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2000, 150, 0)


def test_same_folds_for_every_backbone(compose_train, shared_data: Path) -> None:
    common = ("data=isic2018", f"data.root={shared_data / 'isic2018'}", "data.fold=1")
    first = build_splits(_spec(compose_train, "backbone=resnet152", *common))
    second = build_splits(_spec(compose_train, "backbone=inception_v3", *common))
    assert first.summary["folds_file"] == second.summary["folds_file"]
    assert first.val["image_id"].tolist() == second.val["image_id"].tolist()
    assert not set(first.train["lesion_id"]) & set(first.val["lesion_id"])


def test_unknown_test_set_names_the_choices(compose_train, shared_data: Path) -> None:
    spec = _spec(compose_train, "data=isic2017", f"data.root={shared_data / 'isic2017'}", "data.test=isic2016_test")
    with pytest.raises(ConfigError, match="isic2017_test"):
        build_splits(spec)


def _train_command(shared_data: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "melanoma_lit.train",
            "data=isic_merged",
            f"paths.data_dir={shared_data}",
            f"paths.cache_dir={run_dir.parent / 'cache'}",
            f"hydra.run.dir={run_dir}",
            "debug=limit",
            "backbone=resnet18",
            "data.input_size=32",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_merged_pool_says_which_official_test_set_and_which_images_it_lacks(shared_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _train_command(shared_data, run, "data.allow_missing=true")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = result.stdout + result.stderr
    log = (run / "train.log").read_text()
    folder = shared_data / "isic2019" / "ISIC_2019_Training_Input"
    missing = (
        "12571 of 25336 images have no file on disk: isic2019: 12571 (first: ISIC_0000058, ISIC_0000060, "
        f"ISIC_0000114, ISIC_0000115, ISIC_0000117), looked in {folder} (which does not exist); dropped "
        "(data.allow_missing=true)"
    )
    official = (
        "the training pool holds official test images (isic2017_test: 600): right for a final model, but scores on "
        "those test sets would be inflated. Hold them out with data.test=isic2017_test before scoring on it."
    )
    for text in (missing, official):
        assert seen.count(text) == 1 and text in log
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert data["official_test_in_pool"] == {"isic2017_test": 600}
    assert data["missing_images_per_source"] == {"isic2019": 12_571}
    assert data["removed_for_leakage"] == 0


def test_missing_images_error_names_the_source_and_the_absent_folder(shared_data: Path, tmp_path: Path) -> None:
    result = _train_command(shared_data, tmp_path / "run")
    assert result.returncode == 2
    folder = shared_data / "isic2019" / "ISIC_2019_Training_Input"
    assert (
        f"Error: 12571 of 25336 images have no file on disk: isic2019: 12571 (first: ISIC_0000058, ISIC_0000060, "
        f"ISIC_0000114, ISIC_0000115, ISIC_0000117), looked in {folder} (which does not exist). Point each source's "
        "root at the folder that holds its images, or set data.allow_missing=true to drop them."
    ) in result.stderr
    assert "Traceback" not in result.stderr
