"""The data configs, composed as users compose them, give leak-free train/val/test splits on the real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from melanoma_lit.data.build import DataSpec, build_splits
from melanoma_lit.errors import ConfigError


def _spec(compose_train, *overrides: str) -> DataSpec:
    cfg = compose_train(*overrides)
    return DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True))


def test_isic2017_test_set_leaves_the_merged_training_pool(compose_train, shared_data: Path) -> None:
    spec = _spec(
        compose_train,
        "data=isic_merged",
        f"paths.data_dir={shared_data}",
        "data.allow_missing=true",
        "data.test=isic2017_test",
    )
    splits = build_splits(spec)
    assert len(splits.test) == 600
    test_ids, test_lesions = set(splits.test["image_id"]), set(splits.test["lesion_id"]) - {""}
    for part in (splits.train, splits.val):
        assert not test_ids & set(part["image_id"])
        assert not test_lesions & set(part["lesion_id"])
    assert splits.summary["removed_for_leakage"] >= 600
    assert splits.summary["missing_images_dropped"] > 12_000  # the 2019-only images are not in the shared copy
    assert len(splits.train) + len(splits.val) + splits.summary["removed_for_leakage"] == 12_765


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
