"""Transforms follow the backbone's preprocessing and keep images uint8 until the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from melanoma_lit.data.transforms import Augmentation, Preprocessing, eval_transform, train_transform
from melanoma_lit.models.backbone import preprocessing_for
from tests.conftest import CONF_DIR


def _preset(name: str) -> Augmentation:
    values: dict = {}
    for file in ("light", name):  # strong/none extend light through their defaults list
        data = yaml.safe_load((CONF_DIR / "augment" / f"{file}.yaml").read_text())
        data.pop("defaults", None)
        values.update(data)
    return Augmentation(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def test_inception_uses_299_and_half_mean_std() -> None:
    prep = preprocessing_for("inception_v3")
    assert prep.input_size == (299, 299)
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    assert preprocessing_for("resnet152").input_size == (224, 224)
    assert preprocessing_for("resnet18", input_size=96).input_size == (96, 96)


@pytest.mark.parametrize("preset", ["light", "strong", "none"])
def test_train_transform_outputs_uint8_at_input_size(preset: str) -> None:
    prep = Preprocessing(input_size=(96, 96))
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    out = train_transform(prep, _preset(preset))(image=image)["image"]
    assert out.shape == (3, 96, 96) and out.dtype == torch.uint8


def test_eval_transform_is_resize_then_centre_crop() -> None:
    prep = Preprocessing(input_size=(64, 64), crop_pct=0.8)
    assert prep.resize_side == 80
    image = np.zeros((150, 200, 3), dtype=np.uint8)
    image[:, 100:] = 255  # right half white: a centre crop keeps both halves equally
    out = eval_transform(prep)(image=image)["image"]
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    assert abs(out[0, :, :32].float().mean() - 0) < 5 and abs(out[0, :, 32:].float().mean() - 255) < 5


def test_eval_transform_is_deterministic() -> None:
    prep = preprocessing_for("resnet18")
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    first, second = (eval_transform(prep)(image=image)["image"] for _ in range(2))
    assert torch.equal(first, second)
