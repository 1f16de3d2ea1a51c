"""Transforms follow the backbone's preprocessing and keep images uint8 until the device, where training's
photometric augmentation is applied batch-wise from parameters drawn per sample."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml

from melanoma_lit.data.device_augment import photometric_augment
from melanoma_lit.data.transforms import (
    PHOTOMETRIC_COLUMNS,
    Augmentation,
    Preprocessing,
    eval_transform,
    train_transform,
)
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
    transform = train_transform(prep, _preset(preset))
    transform.set_random_seed(3)
    out = transform(image=image)
    assert out["image"].shape == (3, 96, 96) and out["image"].dtype == torch.uint8
    holes = _preset(preset).dropout_holes[1]
    if preset == "none":  # nothing photometric to do: no parameters travel with the batch
        assert set(out) == {"image"}
    else:
        assert out["photometric"].shape == (len(PHOTOMETRIC_COLUMNS) + 4 * holes,)
    transform.set_random_seed(3)
    again = transform(image=image)
    assert all(torch.equal(out[key], again[key]) for key in out)  # a seed is an image


def test_the_whole_image_at_scale_one_is_only_resized() -> None:
    prep, none = Preprocessing(input_size=(64, 64)), _preset("none")
    image = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    out = train_transform(prep, none)(image=image)["image"]
    assert torch.equal(
        out, torch.from_numpy(cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
    )


def _params(n: int, holes: int = 4, **columns: list[float]) -> np.ndarray:
    """Photometric parameters that change nothing, but for ``columns``."""
    params = np.zeros((n, len(PHOTOMETRIC_COLUMNS) + 4 * holes))
    params[:, :3] = 1.0  # brightness, contrast, saturation factors
    for name, values in columns.items():
        params[:, PHOTOMETRIC_COLUMNS.index(name)] = values
    return params


def test_photometric_parameters_that_change_nothing_leave_the_batch_as_it_is() -> None:
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    out = photometric_augment(images, _params(3))
    assert out.dtype == torch.float32 and torch.allclose(out, images.float(), atol=1e-3)


def test_each_photometric_change_acts_on_its_own_image() -> None:
    images = torch.full((4, 3, 16, 16), 100, dtype=torch.uint8)
    images[:, :, :, 8:] = 200  # an edge for the blur
    params = _params(4, brightness=[1.2, 1, 1, 1], blur_sigma=[0, 1.0, 0, 0], noise_std=[0, 0, 0.05, 0])
    params[:, PHOTOMETRIC_COLUMNS.index("noise_seed")] = [0, 0, 123, 0]
    params[3, len(PHOTOMETRIC_COLUMNS) : len(PHOTOMETRIC_COLUMNS) + 4] = [0.0, 0.0, 0.5, 0.5]  # top-left quarter
    out = photometric_augment(images, params)
    assert torch.allclose(out[0], images[0].float() * 1.2, atol=1e-3)  # brighter, nothing else
    assert 100 < out[1, 0, 0, 7] < 200 and torch.allclose(out[1, :, :, :5], images[1, :, :, :5].float(), atol=1e-3)
    assert (out[2] - images[2].float()).abs().std() > 5  # noisy ...
    alone = photometric_augment(images[2:3], params[2:3])
    assert torch.equal(out[2], alone[0])  # ... with its own noise, in any batch
    assert (out[3, :, :8, :8] == 0).all() and torch.allclose(out[3, :, 8:, :], images[3, :, 8:, :].float())


def test_hue_turns_colour_but_keeps_gray() -> None:
    images = torch.zeros((2, 3, 4, 4), dtype=torch.uint8)
    images[0, 0] = 200  # red
    images[1] = 128  # gray
    out = photometric_augment(images, _params(2, hue=[0.33, 0.33]))
    assert out[0, 1].mean() > out[0, 0].mean()  # a third of the colour circle from red is green
    assert torch.allclose(out[1], images[1].float(), atol=0.5)


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
