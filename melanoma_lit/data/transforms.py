"""Albumentations pipelines sized by the backbone's preprocessing; normalisation happens on the GPU.

Pipelines end in uint8 CHW tensors: a quarter of the bytes of float32 to pin and copy, and the
model normalises with the backbone's mean/std on the device (see LesionClassifier).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass(frozen=True)
class Preprocessing:
    """What the backbone expects of its input (timm's pretrained data config)."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    @property
    def resize_side(self) -> int:
        """Shorter side before the centre crop, as timm's eval transform does."""
        return math.floor(max(self.input_size) / self.crop_pct)

    @property
    def decode_side(self) -> int:
        """Shorter side worth decoding or caching: about 1.25x the input, enough for crops."""
        return max(self.resize_side, math.ceil(1.25 * max(self.input_size)))


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation strengths; presets live in conf/augment/."""

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)
    hflip: float = 0.5
    vflip: float = 0.5
    transpose: float = 0.5
    rotate_limit: int = 0
    rotate: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    color_jitter: float = 0.8
    blur: float = 0.0
    noise: float = 0.0
    coarse_dropout: float = 0.0
    dropout_holes: tuple[int, int] = field(default=(1, 4))


def interpolation_flag(name: str) -> int:
    return _INTERPOLATION.get(name, cv2.INTER_CUBIC)


def train_transform(prep: Preprocessing, aug: Augmentation) -> A.Compose:
    height, width = prep.input_size
    steps: list[A.BasicTransform] = [
        A.RandomResizedCrop(
            size=(height, width),
            scale=tuple(aug.scale),
            ratio=tuple(aug.ratio),
            interpolation=interpolation_flag(prep.interpolation),
        ),
        A.HorizontalFlip(p=aug.hflip),
        A.VerticalFlip(p=aug.vflip),
        A.Transpose(p=aug.transpose),
    ]
    if aug.rotate > 0:
        steps.append(A.Rotate(limit=aug.rotate_limit, border_mode=cv2.BORDER_REFLECT_101, p=aug.rotate))
    if aug.color_jitter > 0:
        steps.append(
            A.ColorJitter(
                brightness=aug.brightness,
                contrast=aug.contrast,
                saturation=aug.saturation,
                hue=aug.hue,
                p=aug.color_jitter,
            )
        )
    if aug.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=(3, 5), p=aug.blur))
    if aug.noise > 0:
        steps.append(A.GaussNoise(std_range=(0.02, 0.06), p=aug.noise))
    if aug.coarse_dropout > 0:
        steps.append(
            A.CoarseDropout(
                num_holes_range=tuple(aug.dropout_holes),
                hole_height_range=(0.05, 0.15),
                hole_width_range=(0.05, 0.15),
                fill=0,
                p=aug.coarse_dropout,
            )
        )
    steps.append(ToTensorV2())
    return A.Compose(steps)


def eval_transform(prep: Preprocessing) -> A.Compose:
    height, width = prep.input_size
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=prep.resize_side, interpolation=interpolation_flag(prep.interpolation)),
            A.CenterCrop(height=height, width=width),
            ToTensorV2(),
        ]
    )
