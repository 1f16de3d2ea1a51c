"""Transforms sized by the backbone's preprocessing; photometric augmentation and normalisation happen on the device.

Loaders ship uint8 CHW tensors: a quarter of the bytes of float32 to pin and copy. Training's photometric changes
(data.device_augment) and the backbone's mean/std (LesionClassifier) are applied to the batch on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np
import torch
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


class TrainTransform:
    """Training augmentation, per sample on the CPU: the geometry (random resized crop, the dihedral flips, a free
    rotation) applied with OpenCV and numpy, and the random draw of the photometric changes, which
    data.device_augment.PhotometricAugment applies to the whole batch on the device after the transfer.

    Colour, blur, noise and dropout cost a loader worker more than decoding does; on the device they are nearly
    free, so a worker feeds ~2-4x more images per second. Their parameters are drawn here, from the sample's seed,
    so a seed still gives the same augmented image. Called like an albumentations pipeline (``set_random_seed``,
    then ``transform(image=...)``); returns ``image`` (uint8 CHW) and, when any photometric change is on,
    ``photometric`` (PHOTOMETRIC_COLUMNS + 4 per dropout hole, float64).
    """

    def __init__(self, prep: Preprocessing, aug: Augmentation) -> None:
        self.size = prep.input_size
        self.aug = aug
        self.photometric = any(p > 0 for p in (aug.color_jitter, aug.blur, aug.noise, aug.coarse_dropout))
        self._rng = np.random.default_rng()

    def set_random_seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self, *, image: np.ndarray) -> dict[str, torch.Tensor]:
        rng, aug = self._rng, self.aug
        box = self._crop_box(image.shape[0], image.shape[1], rng)
        degrees = (
            rng.uniform(-aug.rotate_limit, aug.rotate_limit) if aug.rotate > 0 and rng.random() < aug.rotate else 0
        )
        image = self._crop(image, box, degrees)
        if rng.random() < aug.hflip:
            image = image[:, ::-1]
        if rng.random() < aug.vflip:
            image = image[::-1]
        if rng.random() < aug.transpose and self.size[0] == self.size[1]:
            image = image.transpose(1, 0, 2)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}
        if self.photometric:
            sample["photometric"] = torch.from_numpy(self._photometric(rng))
        return sample

    def _crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop box (top, left, height, width): 10 tries at a random area and aspect,
        else the centre at the nearest allowed aspect."""
        area, log_ratio = height * width, np.log(self.aug.ratio)
        for _ in range(10):
            target = area * rng.uniform(*self.aug.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < self.aug.ratio[0]:
            w, h = width, round(width / self.aug.ratio[0])
        elif in_ratio > self.aug.ratio[1]:
            w, h = round(height * self.aug.ratio[1]), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def _crop(self, image: np.ndarray, box: tuple[int, int, int, int], degrees: float) -> np.ndarray:
        """The box resized to the input size, bilinearly (timm trains with bilinear or bicubic at random; bilinear
        costs a third); with a rotation, crop, resize and turn are one affine warp that reflects at the image's
        border, one pass instead of two."""
        top, left, h, w = box
        out_h, out_w = self.size
        if not degrees:
            return cv2.resize(image[top : top + h, left : left + w], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        scale = np.array([[out_w / w, 0, -left * out_w / w], [0, out_h / h, -top * out_h / h], [0, 0, 1]])
        turn = np.vstack([cv2.getRotationMatrix2D((out_w / 2 - 0.5, out_h / 2 - 0.5), degrees, 1.0), [0, 0, 1]])
        return cv2.warpAffine(
            image, (turn @ scale)[:2], (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )

    def _photometric(self, rng: np.random.Generator) -> np.ndarray:
        aug = self.aug
        jitter = rng.random() < aug.color_jitter
        colour = (
            [
                rng.uniform(1 - aug.brightness, 1 + aug.brightness),
                rng.uniform(1 - aug.contrast, 1 + aug.contrast),
                rng.uniform(1 - aug.saturation, 1 + aug.saturation),
                rng.uniform(-aug.hue, aug.hue),
            ]
            if jitter
            else [1.0, 1.0, 1.0, 0.0]
        )
        sigma = rng.uniform(*BLUR_SIGMA) if rng.random() < aug.blur else 0.0
        noise = [rng.uniform(*NOISE_STD), float(rng.integers(0, 2**31))] if rng.random() < aug.noise else [0.0, 0.0]
        holes = np.zeros((aug.dropout_holes[1], 4))
        if rng.random() < aug.coarse_dropout:
            count = int(rng.integers(aug.dropout_holes[0], aug.dropout_holes[1] + 1))
            size = rng.uniform(*DROPOUT_SIZE, (count, 2))  # height, width as fractions of the image
            corner = rng.uniform(0, 1, (count, 2)) * (1 - size)
            holes[:count] = np.concatenate([corner, size], axis=1)
        return np.concatenate([colour, [sigma], noise, holes.ravel()])


# The photometric parameters' layout, and their ranges (those of the albumentations pipeline they replace).
PHOTOMETRIC_COLUMNS = ("brightness", "contrast", "saturation", "hue", "blur_sigma", "noise_std", "noise_seed")
BLUR_SIGMA = (0.8, 1.1)  # a 3-5 pixel Gaussian kernel's sigma, as albumentations' GaussianBlur(blur_limit=(3, 5))
NOISE_STD = (0.02, 0.06)  # of the full intensity range, as GaussNoise(std_range=(0.02, 0.06))
DROPOUT_SIZE = (0.05, 0.15)  # hole height and width, as fractions of the image


def train_transform(prep: Preprocessing, aug: Augmentation) -> TrainTransform:
    return TrainTransform(prep, aug)


def eval_transform(prep: Preprocessing) -> A.Compose:
    height, width = prep.input_size
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=prep.resize_side, interpolation=interpolation_flag(prep.interpolation)),
            A.CenterCrop(height=height, width=width),
            ToTensorV2(),
        ]
    )
