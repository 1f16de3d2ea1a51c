"""Synthetic dermoscopy images in the official ISIC layouts: a licence-free dataset for demos and tests.

Each class is drawn with the features dermatologists read (asymmetry, border, colours, diameter,
class-typical structures) on varied skin, with hair, vignetting, lighting and sensor noise. A lesion
is photographed 1-4 times (new pose and lighting, same lesion), so lesion-grouped splits matter.
Everything derives from ``(seed, index)``: the same seed gives byte-identical files in any order.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError

# Bump when the drawing changes: ensure_synthetic then regenerates cached folders.
GENERATOR_VERSION = 1
LAYOUTS: tuple[str, ...] = ("isic2019", "isic2017", "folder")
DEFAULT_CLASS_FREQUENCIES: dict[str, float] = {
    "NV": 0.30,
    "MEL": 0.18,
    "BCC": 0.12,
    "BKL": 0.12,
    "AK": 0.08,
    "SCC": 0.08,
    "DF": 0.06,
    "VASC": 0.06,
}
ISIC2017_CLASSES: tuple[str, ...] = ("MEL", "NV", "BKL")
# Full folder names of the class-per-folder layout (keys of FOLDER_NAME_TO_CLASS).
FOLDER_NAMES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "pigmented benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
}

COMPLETE_MARKER = ".complete"
_STARTED_MARKER = ".generating"
_VIEWS_PER_LESION = (np.array([1, 2, 3, 4]), np.array([0.45, 0.30, 0.15, 0.10]))
_ISIC2017_SPLITS = (("Training", 2000), ("Validation", 150), ("Test_v2", 600))
_FOLDER_SPLITS = (("Train", 0.9), ("Test", 0.1))
_SITES = (
    "anterior torso",
    "posterior torso",
    "lower extremity",
    "upper extremity",
    "head/neck",
    "lateral torso",
    "palms/soles",
    "oral/genital",
)
_SITE_WEIGHTS = np.array([0.27, 0.11, 0.20, 0.12, 0.18, 0.05, 0.05, 0.02])
_SUN_EXPOSED_CLASSES = frozenset({"AK", "BCC", "SCC"})
_MEAN_AGE = {"MEL": 60, "NV": 40, "BCC": 67, "AK": 70, "BKL": 62, "DF": 45, "VASC": 45, "SCC": 72}

# Reference colours, RGB in [0, 1].
_TAN = (0.80, 0.56, 0.40)
_BROWN = (0.56, 0.32, 0.19)
_DARK_BROWN = (0.33, 0.17, 0.10)
_BLACK = (0.13, 0.09, 0.08)
_BLUE_GREY = (0.40, 0.45, 0.57)
_BLUE_WHITE = (0.66, 0.72, 0.82)
_WHITE = (0.97, 0.95, 0.92)
_PINK = (0.93, 0.66, 0.66)
_PEARL = (0.95, 0.82, 0.82)
_RED = (0.80, 0.14, 0.18)
_DARK_RED = (0.45, 0.10, 0.10)
_PURPLE = (0.42, 0.12, 0.30)
_KERATIN = (0.95, 0.90, 0.70)
# Fitzpatrick I-VI as dermoscopy shows them, and how often each appears.
_SKIN_TONES = np.array(
    [
        (0.97, 0.83, 0.81),
        (0.94, 0.77, 0.71),
        (0.86, 0.67, 0.57),
        (0.73, 0.54, 0.43),
        (0.55, 0.39, 0.31),
        (0.38, 0.27, 0.22),
    ]
)
_SKIN_TONE_WEIGHTS = np.array([0.25, 0.35, 0.20, 0.10, 0.06, 0.04])


# ----------------------------------------------------------------------------- lesion description
@dataclass
class _Blob:
    """A soft colour patch; ``ragged`` lets the lesion's mottling eat into its outline."""

    centre: tuple[float, float]
    sigma: float
    colour: np.ndarray
    strength: float
    ragged: float = 0.0


@dataclass
class _Network:
    """Pigment network: a honeycomb of dark lines, optionally only in a ring (dermatofibroma)."""

    frequency: float
    angle: float
    phases: tuple[float, float, float]
    darkness: float
    colour: np.ndarray
    ring: float | None = None


@dataclass
class _Lesion:
    """One lesion in its own frame (units: half the image's short side at pose scale 1)."""

    cls: str
    radius: float
    aspect: float
    orientation: float
    harmonics: np.ndarray  # rows: order k, amplitude, phase
    edge: float  # border softness relative to the radius
    opacity: float
    base: np.ndarray
    waves: np.ndarray  # rows: fx, fy, phase (mottling texture)
    mottle: float
    blobs: list[_Blob] = field(default_factory=list)
    network: _Network | None = None
    dots: list[tuple[float, float, float, np.ndarray]] = field(default_factory=list)  # x, y, radius, colour
    lines: list[tuple[np.ndarray, float, np.ndarray]] = field(default_factory=list)  # points, width, colour

    def extent(self) -> float:
        shape = self.radius * (1 + np.abs(self.harmonics[:, 1]).sum()) * math.sqrt(self.aspect) * (1 + self.edge)
        prims = [math.hypot(x, y) + r for x, y, r, _ in self.dots]
        prims += [float(np.linalg.norm(p, axis=1).max()) + w for p, w, _ in self.lines]
        return 1.05 * max([shape, *prims])

    def rho(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Distance from the centre relative to the border in that direction: 1 on the border."""
        co, so = math.cos(self.orientation), math.sin(self.orientation)
        su, sv = (co * u + so * v) / math.sqrt(self.aspect), (-so * u + co * v) * math.sqrt(self.aspect)
        grid = np.linspace(-np.pi, np.pi, 721)
        table = self.radius * (1 + sum(a * np.cos(k * grid + ph) for k, a, ph in self.harmonics))
        return np.hypot(su, sv) / np.interp(np.arctan2(sv, su), grid, table).astype(np.float32)

    def border(self, angle: float) -> float:
        """Distance from the centre to the border along ``angle``."""
        t = np.linspace(0, 3 * self.radius, 300)
        outside = self.rho(t * math.cos(angle), t * math.sin(angle)) >= 1
        return float(t[np.argmax(outside)] if outside.any() else t[-1])


def _colour(rng: np.random.Generator, base: Sequence[float], jitter: float = 0.05) -> np.ndarray:
    colour = np.asarray(base) * rng.normal(1.0, jitter / 2, 3) * rng.normal(1.0, jitter)
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> np.ndarray:
    return (1 - t) * np.asarray(a) + t * np.asarray(b)


def _harmonics(rng: np.random.Generator, orders: Iterable[int], amplitude: tuple[float, float]) -> np.ndarray:
    orders = list(orders)
    return np.column_stack([orders, rng.uniform(*amplitude, len(orders)), rng.uniform(0, 2 * np.pi, len(orders))])


def _points_in_disc(rng: np.random.Generator, n: int, outer: float, inner: float = 0.0) -> np.ndarray:
    radius = np.sqrt(rng.uniform(inner**2, outer**2, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])


def _shape(
    rng: np.random.Generator,
    cls: str,
    radius: tuple[float, float],
    aspect: tuple[float, float],
    harmonics: np.ndarray,
    edge: tuple[float, float],
    opacity: tuple[float, float],
    base: np.ndarray,
    mottle: tuple[float, float],
) -> _Lesion:
    return _Lesion(
        cls=cls,
        radius=rng.uniform(*radius),
        aspect=rng.uniform(*aspect),
        orientation=rng.uniform(0, np.pi),
        harmonics=harmonics,
        edge=rng.uniform(*edge),
        opacity=rng.uniform(*opacity),
        base=base,
        waves=_waves(rng, 16, 3.5),
        mottle=rng.uniform(*mottle),
    )


def _waves(rng: np.random.Generator, n: int, frequency: float) -> np.ndarray:
    """Random plane waves (cycles per lesion unit) whose sum is a smooth texture fixed to the lesion."""
    return np.column_stack([rng.normal(0, frequency, n), rng.normal(0, frequency, n), rng.uniform(0, 2 * np.pi, n)])


def _dots(
    rng: np.random.Generator, lesion: _Lesion, n: int, where: tuple[float, float], size: tuple[float, float], colour
) -> None:
    for x, y in _points_in_disc(rng, n, where[1] * lesion.radius, where[0] * lesion.radius):
        lesion.dots.append((x, y, rng.uniform(*size) * lesion.radius, _colour(rng, colour, 0.04)))


def _nevus(rng: np.random.Generator) -> _Lesion:
    lesion = _shape(
        rng,
        "NV",
        radius=(0.36, 0.55),
        aspect=(1.0, 1.15),
        harmonics=_harmonics(rng, (2, 3), (0.0, 0.04)),
        edge=(0.08, 0.18),
        opacity=(0.92, 0.98),
        base=_colour(rng, _mix(_TAN, _DARK_BROWN, rng.uniform(0.3, 0.75))),
        mottle=(0.04, 0.08),
    )
    darker = rng.random() < 0.6
    lesion.blobs.append(
        _Blob((0.0, 0.0), 0.5 * lesion.radius, _colour(rng, _DARK_BROWN if darker else _TAN), rng.uniform(0.25, 0.45))
    )
    if rng.random() < 0.15:  # dysplastic: an eccentric dark area, the melanoma look-alike
        centre = tuple(_points_in_disc(rng, 1, 0.5 * lesion.radius)[0])
        lesion.blobs.append(_Blob(centre, 0.3 * lesion.radius, _colour(rng, _DARK_BROWN), 0.5, 0.6))
    lesion.network = _Network(
        frequency=6.0 / lesion.radius,
        angle=rng.uniform(0, np.pi),
        phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        darkness=rng.uniform(0.15, 0.3),
        colour=_colour(rng, _DARK_BROWN),
    )
    if rng.random() < 0.4:  # globular nevus: regular brown globules
        _dots(rng, lesion, int(rng.integers(8, 20)), (0.0, 0.8), (0.06, 0.09), _DARK_BROWN)
    return lesion


def _melanoma(rng: np.random.Generator) -> _Lesion:
    harmonics = np.vstack([_harmonics(rng, (1, 2, 3), (0.06, 0.16)), _harmonics(rng, range(4, 10), (0.015, 0.05))])
    lesion = _shape(
        rng,
        "MEL",
        radius=(0.5, 0.85),
        aspect=(1.1, 1.5),
        harmonics=harmonics,
        edge=(0.05, 0.2),
        opacity=(0.95, 0.99),
        base=_colour(rng, _BROWN, 0.08),
        mottle=(0.10, 0.18),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(2, 5)), 0.6 * r):
        colour = _BLACK if rng.random() < 0.5 else _DARK_BROWN
        lesion.blobs.append(
            _Blob(tuple(centre), rng.uniform(0.18, 0.35) * r, _colour(rng, colour), rng.uniform(0.6, 0.9), 0.6)
        )
    for colour, chance, strength in (
        (_TAN, 0.7, 0.6),
        (_BLUE_WHITE, 0.65, 0.75),
        (_PINK, 0.35, 0.6),
        (_WHITE, 0.35, 0.5),
    ):
        if rng.random() < chance:  # blue-white veil, red areas, regression
            centre = tuple(_points_in_disc(rng, 1, 0.6 * r)[0])
            lesion.blobs.append(_Blob(centre, rng.uniform(0.2, 0.35) * r, _colour(rng, colour), strength, 0.8))
    lesion.network = _Network(
        frequency=rng.uniform(3.5, 6.0) / r,
        angle=rng.uniform(0, np.pi),
        phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        darkness=rng.uniform(0.3, 0.5),
        colour=_colour(rng, _BLACK),
    )
    _dots(rng, lesion, int(rng.integers(8, 25)), (0.5, 1.0), (0.02, 0.07), _BLACK)
    if rng.random() < 0.4:  # streaks / pseudopods at the periphery
        for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))):
            direction = np.array([np.cos(angle), np.sin(angle)])
            border = lesion.border(angle)
            points = np.outer([0.85 * border, border + rng.uniform(0.08, 0.2) * r], direction)
            lesion.lines.append((points, rng.uniform(0.015, 0.03), _colour(rng, _DARK_BROWN)))
    return lesion


def _vessel_tree(
    rng: np.random.Generator, start: np.ndarray, angle: float, length: float, width: float, depth: int
) -> list[tuple[np.ndarray, float]]:
    """Arborizing vessel: a wiggly trunk that forks into thinner, shorter branches."""
    steps = np.cumsum(rng.normal(0, 0.25, 4)) + angle
    points = start + np.cumsum(np.column_stack([np.cos(steps), np.sin(steps)]) * length / 4, axis=0)
    points = np.vstack([start, points])
    tree = [(points, width)]
    if depth > 0:
        for side in (-1, 1):
            tree += _vessel_tree(
                rng,
                points[-1],
                steps[-1] + side * rng.uniform(0.3, 0.8),
                length * rng.uniform(0.55, 0.75),
                width * 0.7,
                depth - 1,
            )
    return tree


def _basal_cell_carcinoma(rng: np.random.Generator) -> _Lesion:
    lesion = _shape(
        rng,
        "BCC",
        radius=(0.45, 0.7),
        aspect=(1.0, 1.4),
        harmonics=_harmonics(rng, (2, 3, 4, 5), (0.03, 0.09)),
        edge=(0.15, 0.3),
        opacity=(0.75, 0.9),
        base=_colour(rng, _mix(_PINK, _PEARL, rng.uniform(0.3, 1.0)), 0.03),
        mottle=(0.05, 0.1),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(1, 3)), 0.5 * r):
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.15, 0.3) * r, _colour(rng, _WHITE), 0.45, 0.5))
    if rng.random() < 0.5:  # blue-grey ovoid nests
        for centre in _points_in_disc(rng, int(rng.integers(2, 6)), 0.7 * r):
            lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.06, 0.12) * r, _colour(rng, _BLUE_GREY), 0.75))
    if rng.random() < 0.25:  # ulceration
        centre = tuple(_points_in_disc(rng, 1, 0.4 * r)[0])
        lesion.blobs.append(_Blob(centre, 0.12 * r, _colour(rng, _DARK_RED), 0.85, 0.5))
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(3, 6))):
        start = np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(0.6, 0.9) * r
        inward = angle + np.pi + rng.normal(0, 0.5)
        for points, width in _vessel_tree(rng, start, inward, rng.uniform(0.35, 0.55) * r, rng.uniform(0.018, 0.03), 3):
            lesion.lines.append((points, width, _colour(rng, _RED, 0.04)))
    return lesion


def _actinic_keratosis(rng: np.random.Generator) -> _Lesion:
    lesion = _shape(
        rng,
        "AK",
        radius=(0.55, 0.85),
        aspect=(1.0, 1.5),
        harmonics=_harmonics(rng, (1, 2, 3, 4), (0.05, 0.12)),
        edge=(0.45, 0.7),
        opacity=(0.65, 0.85),
        base=_colour(rng, _mix(_PINK, _RED, rng.uniform(0.25, 0.5)), 0.04),
        mottle=(0.12, 0.2),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(2, 4)), 0.6 * r):
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.2, 0.35) * r, _colour(rng, _RED), 0.4, 0.8))
    if rng.random() < 0.3:  # pigmented actinic keratosis
        centre = tuple(_points_in_disc(rng, 1, 0.5 * r)[0])
        lesion.blobs.append(_Blob(centre, 0.3 * r, _colour(rng, _BROWN), 0.45, 0.8))
    for centre in _points_in_disc(rng, int(rng.integers(2, 5)), 0.7 * r):  # scale
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.08, 0.16) * r, _colour(rng, _WHITE), 0.55, 1.0))
    _dots(rng, lesion, int(rng.integers(25, 60)), (0.0, 0.9), (0.02, 0.045), _KERATIN)  # follicular openings
    return lesion


def _benign_keratosis(rng: np.random.Generator) -> _Lesion:
    harmonics = np.vstack([_harmonics(rng, (2, 3, 4), (0.04, 0.1)), _harmonics(rng, range(5, 9), (0.01, 0.03))])
    lesion = _shape(
        rng,
        "BKL",
        radius=(0.48, 0.75),
        aspect=(1.0, 1.5),
        harmonics=harmonics,
        edge=(0.03, 0.07),
        opacity=(0.88, 0.95),
        base=_colour(rng, _mix(_TAN, _BROWN, rng.uniform(0.0, 0.5)) * np.array([1.0, 1.0, 0.85])),
        mottle=(0.12, 0.2),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(2, 4)), 0.6 * r):
        colour = _TAN if rng.random() < 0.5 else _BROWN
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.2, 0.35) * r, _colour(rng, colour), 0.35, 0.8))
    _dots(rng, lesion, int(rng.integers(6, 18)), (0.0, 0.85), (0.04, 0.08), _WHITE)  # milia-like cysts
    _dots(rng, lesion, int(rng.integers(4, 12)), (0.0, 0.85), (0.04, 0.08), _DARK_BROWN)  # comedo-like openings
    for _ in range(int(rng.integers(3, 8))):  # fissures and ridges
        start = _points_in_disc(rng, 1, 0.7 * r)[0]
        steps = np.cumsum(rng.normal(0, 0.4, 5)) + rng.uniform(0, 2 * np.pi)
        points = start + np.cumsum(np.column_stack([np.cos(steps), np.sin(steps)]) * 0.08 * r, axis=0)
        lesion.lines.append((np.vstack([start, points]), 0.02, _colour(rng, _DARK_BROWN)))
    return lesion


def _dermatofibroma(rng: np.random.Generator) -> _Lesion:
    lesion = _shape(
        rng,
        "DF",
        radius=(0.3, 0.45),
        aspect=(1.0, 1.25),
        harmonics=_harmonics(rng, (2, 3), (0.01, 0.05)),
        edge=(0.3, 0.5),
        opacity=(0.85, 0.92),
        base=_colour(rng, _mix(_TAN, _BROWN, rng.uniform(0.2, 0.6))),
        mottle=(0.05, 0.1),
    )
    r = lesion.radius
    centre = tuple(rng.normal(0, 0.05 * r, 2))
    lesion.blobs.append(_Blob(centre, rng.uniform(0.28, 0.36) * r, _colour(rng, _WHITE, 0.03), 0.95, 0.4))
    lesion.network = _Network(
        frequency=rng.uniform(5, 7) / r,
        angle=rng.uniform(0, np.pi),
        phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        darkness=rng.uniform(0.3, 0.45),
        colour=_colour(rng, _DARK_BROWN),
        ring=0.7,
    )
    return lesion


def _vascular(rng: np.random.Generator) -> _Lesion:
    lesion = _shape(
        rng,
        "VASC",
        radius=(0.35, 0.55),
        aspect=(1.0, 1.3),
        harmonics=_harmonics(rng, (3, 4, 5, 6), (0.03, 0.08)),
        edge=(0.05, 0.1),
        opacity=(0.93, 0.98),
        base=_colour(rng, _mix(_PINK, _RED, 0.25), 0.04),
        mottle=(0.04, 0.08),
    )
    r = lesion.radius
    for x, y in _points_in_disc(rng, int(rng.integers(10, 25)), 0.8 * r):  # lacunae
        colour = _mix(_RED, _PURPLE, rng.uniform(0.0, 1.0)) * rng.uniform(0.6, 1.0)
        lesion.dots.append((x, y, rng.uniform(0.1, 0.2) * r, _colour(rng, colour, 0.04)))
    return lesion


def _squamous_cell_carcinoma(rng: np.random.Generator) -> _Lesion:
    lesion = _shape(
        rng,
        "SCC",
        radius=(0.5, 0.75),
        aspect=(1.0, 1.4),
        harmonics=_harmonics(rng, (1, 2, 3, 4), (0.05, 0.12)),
        edge=(0.15, 0.3),
        opacity=(0.8, 0.9),
        base=_colour(rng, _mix(_PINK, _RED, rng.uniform(0.35, 0.6)), 0.04),
        mottle=(0.08, 0.14),
    )
    r = lesion.radius
    centre = tuple(rng.normal(0, 0.1 * r, 2))
    lesion.blobs.append(_Blob(centre, rng.uniform(0.3, 0.42) * r, _colour(rng, _KERATIN, 0.03), 0.95, 0.6))
    _dots(rng, lesion, int(rng.integers(10, 30)), (0.5, 0.95), (0.025, 0.05), _RED)  # glomerular vessels
    _dots(rng, lesion, int(rng.integers(10, 25)), (0.0, 0.5), (0.02, 0.05), _WHITE)  # keratin scale
    if rng.random() < 0.4:  # blood spots
        _dots(rng, lesion, int(rng.integers(2, 5)), (0.2, 0.7), (0.05, 0.09), _DARK_RED)
    return lesion


_RECIPES = {
    "MEL": _melanoma,
    "NV": _nevus,
    "BCC": _basal_cell_carcinoma,
    "AK": _actinic_keratosis,
    "BKL": _benign_keratosis,
    "DF": _dermatofibroma,
    "VASC": _vascular,
    "SCC": _squamous_cell_carcinoma,
}


# ----------------------------------------------------------------------------- drawing
def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _lowres_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a small random grid upsampled bicubically."""
    h, w = shape
    grid = rng.uniform(-1, 1, (max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))))
    return np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC))


def _texture(waves: np.ndarray, dx: np.ndarray, dy: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """Sum of plane waves in [-1, 1] over the pixel grid ``dy x dx`` (lesion units, rotated by ``angle``).

    Each wave is separable, cos(a x + b y + p) = cos(a x) cos(b y + p) - sin(a x) sin(b y + p), so the
    sum is one small matrix product. Waves finer than the pixels fade out instead of aliasing.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    fx, fy, phase = waves.T
    a, b = 2 * np.pi * (fx * cos - fy * sin), 2 * np.pi * (fx * sin + fy * cos)
    visible = np.clip((scale / np.maximum(np.hypot(fx, fy), 1e-6) - 2) / 4, 0, 1) / math.sqrt(2 * len(waves))
    rows = np.outer(dy, b) + phase
    by_row = np.hstack([visible * np.cos(rows), -visible * np.sin(rows)]).astype(np.float32)
    by_column = np.vstack([np.cos(np.outer(a, dx)), np.sin(np.outer(a, dx))]).astype(np.float32)
    return np.clip(np.einsum("hk,kw->hw", by_row, by_column), -1, 1)  # no BLAS threads in workers


def _skin(rng: np.random.Generator, tone: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mottle = 0.04 * _lowres_noise(rng, shape, 6)
    redness = 0.05 * np.clip(_lowres_noise(rng, shape, 5), 0, 1)
    fine = 0.025 * _lowres_noise(rng, shape, max(4, min(shape) // 3))
    skin = tone.astype(np.float32) * (1 + mottle + fine)[..., None]
    skin[..., 1:] *= (1 - redness)[..., None]
    return skin


def _draw_lesion(
    lesion: _Lesion,
    canvas: np.ndarray,
    centre: np.ndarray,
    angle: float,
    scale: float,
    darken: float,
    rng: np.random.Generator,
) -> None:
    """Composite the lesion onto ``canvas`` (H, W, 3) in place; ``scale`` is pixels per lesion unit."""
    h, w, _ = canvas.shape
    reach = lesion.extent() * scale + 2
    x0, y0 = (max(0, int(c - reach)) for c in centre)
    x1, y1 = min(w, int(centre[0] + reach) + 1), min(h, int(centre[1] + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - float(centre[0])) / scale
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - float(centre[1])) / scale
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # lesion frame
    texture = _texture(lesion.waves, dx, dy[:, 0], angle, scale)
    grain = _lowres_noise(rng, u.shape, max(2, round(max(u.shape) * 24 / scale)))  # isotropic, photo-specific

    rho = lesion.rho(u, v)
    inside = _smoothstep((1 - rho + 0.15 * lesion.edge * texture) / lesion.edge)
    alpha = lesion.opacity * inside

    colour = lesion.base[None, None, :] * (1 + lesion.mottle * texture + 0.5 * lesion.mottle * grain)[..., None]
    for blob in lesion.blobs:
        bx, by = (float(c) for c in blob.centre)
        px, py = (cos * bx - sin * by) * scale + centre[0] - x0, (sin * bx + cos * by) * scale + centre[1] - y0
        reach = 3 * blob.sigma * scale + 1
        window = np.s_[
            max(0, int(py - reach)) : max(0, int(py + reach) + 1), max(0, int(px - reach)) : max(0, int(px + reach) + 1)
        ]
        d2 = ((u[window] - bx) ** 2 + (v[window] - by) ** 2) / (2 * blob.sigma**2)
        weight = blob.strength * np.exp(-d2) * np.clip(1 + blob.ragged * texture[window], 0, 1.5)
        weight = (np.clip(weight, 0, 1) * inside[window])[..., None]
        colour[window] = colour[window] * (1 - weight) + blob.colour * weight
    if lesion.network is not None:
        net = lesion.network
        cell_px = scale / net.frequency
        contrast = net.darkness * np.clip((cell_px - 2) / 4, 0, 1)  # optics blur nets finer than the pixels
        if contrast > 0:
            lattice = sum(
                np.cos(2 * np.pi * net.frequency * (math.cos(t) * u + math.sin(t) * v) + phase + 1.5 * texture)
                for t, phase in zip(net.angle + np.array([0, 2, 4]) * np.pi / 3, net.phases, strict=True)
            )  # honeycomb: bright holes at the maxima, connected dark lines where it is low
            lines = _smoothstep((0.2 - lattice) / 0.8) * np.clip(0.6 + 0.6 * grain, 0, 1)
            if net.ring is None:
                lines = lines * _smoothstep((1.05 - rho) / 0.5)  # fades towards the periphery
            else:
                lines = lines * _smoothstep((rho - 0.4 * net.ring) / (0.6 * net.ring))
            weight = (contrast * lines * inside)[..., None]
            colour = colour * (1 - weight) + net.colour * weight

    if lesion.dots or lesion.lines:
        prim_colour, prim_mask = _draw_primitives(lesion, (x1 - x0, y1 - y0), centre - (x0, y0), angle, scale)
        colour = colour * (1 - prim_mask[..., None]) + prim_colour * prim_mask[..., None]
        alpha = np.maximum(alpha, prim_mask * lesion.opacity)

    colour = np.clip(colour, 0, 1) * darken
    region = canvas[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1] = region * (1 - alpha[..., None]) + colour * alpha[..., None]


def _draw_primitives(
    lesion: _Lesion, size: tuple[int, int], centre: np.ndarray, angle: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dots and lines drawn with PIL at 2x then downsampled: antialiased at any image size."""
    ss = 2
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def to_px(points: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(points) @ rot.T * scale + centre) * ss

    big = (size[0] * ss, size[1] * ss)
    rgb, mask = Image.new("RGB", big), Image.new("L", big)
    draw_rgb, draw_mask = ImageDraw.Draw(rgb), ImageDraw.Draw(mask)
    for points, width, colour in lesion.lines:
        xy = [tuple(p) for p in to_px(points)]
        px = max(1, round(width * scale * ss))
        draw_rgb.line(xy, fill=tuple(int(c * 255) for c in colour), width=px, joint="curve")
        draw_mask.line(xy, fill=255, width=px, joint="curve")
    for x, y, radius, colour in lesion.dots:
        cx, cy = to_px(np.array([x, y]))[0]
        rad = max(0.75, radius * scale * ss)
        box = (cx - rad, cy - rad, cx + rad, cy + rad)
        draw_rgb.ellipse(box, fill=tuple(int(c * 255) for c in colour))
        draw_mask.ellipse(box, fill=255)
    rgb = rgb.resize(size, Image.Resampling.BOX)
    mask = mask.resize(size, Image.Resampling.BOX)
    colour = np.asarray(rgb, dtype=np.float32) / 255
    weight = np.asarray(mask, dtype=np.float32) / 255
    colour = colour / np.maximum(weight, 1e-3)[..., None]  # un-premultiply the black background
    return np.clip(colour, 0, 1), weight


def _draw_hair(rng: np.random.Generator, canvas: np.ndarray) -> None:
    h, w, _ = canvas.shape
    ss = 2
    mask = Image.new("L", (w * ss, h * ss))
    draw = ImageDraw.Draw(mask)
    short = min(h, w)
    for _ in range(int(rng.integers(1, 12))):
        start = rng.uniform(0, 1, 2) * (w, h)
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.4, 1.5) * short
        bend = np.cumsum(rng.normal(rng.normal(0, 0.1), 0.05, 12))
        steps = np.column_stack([np.cos(heading + bend), np.sin(heading + bend)]) * length / 12
        points = np.vstack([start, start + np.cumsum(steps, axis=0)]) * ss
        width = max(1, round(rng.uniform(0.005, 0.012) * short * ss))
        draw.line([tuple(p) for p in points], fill=int(rng.uniform(200, 255)), width=width, joint="curve")
    weight = np.asarray(mask.resize((w, h), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255
    colour = _colour(rng, _BLACK, 0.1) * rng.uniform(0.5, 1.6)
    canvas *= 1 - weight
    canvas += weight * colour


def _lighting(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    h, w, _ = canvas.shape
    half = min(h, w) / 2
    px = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / half
    py = (np.arange(h, dtype=np.float32)[:, None] + 0.5 - h / 2) / half
    direction = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.88, 1.1) * (1 + rng.uniform(0, 0.12) * (math.cos(direction) * px + math.sin(direction) * py))
    gain = gain * (1 - rng.uniform(0, 0.12) * (px**2 + py**2) / 2)  # dermoscope fall-off
    lit = canvas * gain[..., None] * rng.normal(1.0, 0.03, 3).astype(np.float32)
    lit = np.clip(lit, 0, 1) ** rng.uniform(0.9, 1.1)
    if rng.random() < 0.35:  # dark circular corners of the dermoscope
        radius = rng.uniform(0.75, 1.0) * math.hypot(w, h) / 2 / half
        ox, oy = (float(o) for o in rng.normal(0, 0.04, 2))
        outside = _smoothstep((np.hypot(px - ox, py - oy) - radius) / 0.06)
        lit = lit * (1 - outside[..., None]) + rng.uniform(0.01, 0.06) * outside[..., None]
    return lit


def _render(lesion: _Lesion, skin_tone: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One photograph of ``lesion``: new pose, lighting, hair and noise for every view."""
    w, h = size
    half = min(w, h) / 2
    canvas = _skin(rng, skin_tone * rng.uniform(0.95, 1.05), (h, w))
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.12, 0.12, 2) * half
    darken = float(np.clip(skin_tone.mean() / _SKIN_TONES[1].mean(), 0.45, 1.0) ** 0.7)
    _draw_lesion(lesion, canvas, centre, rng.uniform(0, 2 * np.pi), half * rng.uniform(0.85, 1.15), darken, rng)
    if rng.random() < 0.3:
        _draw_hair(rng, canvas)
    canvas = _lighting(rng, canvas)
    image = Image.fromarray((canvas * 255 + 0.5).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7) * max(1.0, half / 64) ** 0.5))
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(2.0, 6.0)
    noisy = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    position = np.clip(rng.choice(6, p=_SKIN_TONE_WEIGHTS) + rng.uniform(-0.5, 0.5), 0, 5)
    low = int(position)
    high = min(low + 1, 5)
    return _mix(_SKIN_TONES[low], _SKIN_TONES[high], position - low) * rng.normal(1.0, 0.02, 3)


# ----------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _Job:
    index: int  # image index: seeds the view
    image_id: str
    relpath: str
    lesion: int  # lesion index: seeds the lesion and its skin
    cls: str


@dataclass(frozen=True)
class _LesionPlan:
    index: int
    cls: str
    views: int
    age: float
    sex: str
    site: str
    split: str = ""


def _class_counts(n: int, frequencies: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: counts sum to ``n`` and follow the frequencies as closely as integers can."""
    exact = {cls: n * f for cls, f in frequencies.items()}
    counts = {cls: int(x) for cls, x in exact.items()}
    by_remainder = sorted(exact, key=lambda c: (-(exact[c] - counts[c]), ISIC_CLASSES.index(c)))
    for cls in by_remainder[: n - sum(counts.values())]:
        counts[cls] += 1
    return counts


def _patient(rng: np.random.Generator, cls: str) -> tuple[float, str, str]:
    """Age, sex and site as the ISIC metadata has them, a few unknown; carcinomas favour older, sun-exposed skin."""
    age = float(np.clip(5 * round(rng.normal(_MEAN_AGE[cls], 14) / 5), 5, 85))
    sex = "male" if rng.random() < 0.53 else "female"
    sun = np.where(np.array(_SITES) == "head/neck", 3.0 if cls in _SUN_EXPOSED_CLASSES else 1.0, 1.0)
    site = str(rng.choice(_SITES, p=_SITE_WEIGHTS * sun / (_SITE_WEIGHTS * sun).sum()))
    unknown = rng.random(3) < (0.02, 0.015, 0.03)
    return (np.nan if unknown[0] else age), ("" if unknown[1] else sex), ("" if unknown[2] else site)


def _plan_lesions(n: int, frequencies: dict[str, float], seed: int) -> list[_LesionPlan]:
    """Lesions with 1-4 photographs each, class counts exact, in random order."""
    rng = np.random.default_rng([seed, 0])
    lesions: list[_LesionPlan] = []
    for cls, count in _class_counts(n, frequencies).items():
        while count > 0:
            views = min(count, int(rng.choice(_VIEWS_PER_LESION[0], p=_VIEWS_PER_LESION[1])))
            count -= views
            lesions.append(_LesionPlan(len(lesions), cls, views, *_patient(rng, cls)))
    return [replace(lesions[j], index=i) for i, j in enumerate(rng.permutation(len(lesions)))]


def _assign_splits(lesions: list[_LesionPlan], splits: Sequence[tuple[str, float]]) -> list[_LesionPlan]:
    """Lesion-disjoint splits, per class, each lesion to the split furthest below its share of images."""
    names = [s for s, _ in splits]
    shares = np.array([w for _, w in splits], dtype=float)
    shares /= shares.sum()
    filled: dict[str, np.ndarray] = {}
    out = []
    for plan in lesions:
        got = filled.setdefault(plan.cls, np.zeros(len(names)))
        target = shares * (got.sum() + plan.views)
        pick = int(np.argmax(target - got))
        got[pick] += plan.views
        out.append(replace(plan, split=names[pick]))
    return out


def _jobs(lesions: list[_LesionPlan], layout: str, seed: int) -> list[tuple[_Job, _LesionPlan]]:
    images = [plan for plan in lesions for _ in range(plan.views)]
    order = np.random.default_rng([seed, 3]).permutation(len(images))  # image ids do not reveal lesions
    jobs = []
    for index, k in enumerate(order):
        plan = images[k]
        image_id = f"ISIC_{index:07d}"
        if layout == "isic2019":
            relpath = f"ISIC_2019_Training_Input/{image_id}.jpg"
        elif layout == "isic2017":
            relpath = f"ISIC-2017_{plan.split}_Data/{image_id}.jpg"
        else:
            relpath = f"{plan.split}/{FOLDER_NAMES[plan.cls]}/{image_id}.jpg"
        jobs.append((_Job(index, image_id, relpath, plan.index, plan.cls), plan))
    return jobs


# ----------------------------------------------------------------------------- writing
def _render_chunk(out: str, jobs: list[_Job], size: tuple[int, int], seed: int) -> int:
    for job in jobs:
        lesion_rng = np.random.default_rng([seed, 1, job.lesion])
        lesion = _RECIPES[job.cls](lesion_rng)
        skin = _skin_tone(lesion_rng)
        image = _render(lesion, skin, np.random.default_rng([seed, 2, job.index]), size)
        image.save(Path(out) / job.relpath, "JPEG", quality=90)
    return len(jobs)


def _render_all(
    out: Path, jobs: list[_Job], size: tuple[int, int], seed: int, workers: int, label: str, progress: bool
) -> None:
    chunk = max(1, min(64, math.ceil(len(jobs) / (workers * 8))))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    columns = (TextColumn("synthetic {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    if workers == 1:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(label, total=len(jobs))
            for part in chunks:
                bar.advance(task, _render_chunk(str(out), part, size, seed))
        return
    # fork needs no importable __main__; workers fork at submit, before the progress bar starts its thread
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(_render_chunk, str(out), part, size, seed) for part in chunks]
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(label, total=len(jobs))
            for future in as_completed(futures):
                bar.advance(task, future.result())


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _age(age: float, missing: str) -> str:
    return missing if math.isnan(age) else str(int(age))


def _write_tables(out: Path, layout: str, jobs: list[tuple[_Job, _LesionPlan]]) -> None:
    if layout == "isic2019":
        _write_csv(
            out / "ISIC_2019_Training_GroundTruth.csv",
            ["image", *ISIC_CLASSES, "UNK"],
            ([job.image_id, *("1.0" if c == job.cls else "0.0" for c in ISIC_CLASSES), "0.0"] for job, _ in jobs),
        )
        _write_csv(
            out / "ISIC_2019_Training_Metadata.csv",
            ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
            ([job.image_id, _age(p.age, ""), p.site, f"IL_{p.index:07d}", p.sex] for job, p in jobs),
        )
    elif layout == "isic2017":
        for split, _ in _ISIC2017_SPLITS:
            rows = [(job, p) for job, p in jobs if p.split == split]
            _write_csv(
                out / f"ISIC-2017_{split}_Part3_GroundTruth.csv",
                ["image_id", "melanoma", "seborrheic_keratosis"],
                ([j.image_id, "1.0" if j.cls == "MEL" else "0.0", "1.0" if j.cls == "BKL" else "0.0"] for j, _ in rows),
            )
            if split != "Test_v2":  # the official test download has no metadata file
                _write_csv(
                    out / f"ISIC-2017_{split}_Data_metadata.csv",
                    ["image_id", "age_approximate", "sex"],
                    ([j.image_id, _age(p.age, "unknown"), p.sex or "unknown"] for j, p in rows),
                )


def _layout_dirs(layout: str) -> list[str]:
    if layout == "isic2019":
        return ["ISIC_2019_Training_Input"]
    if layout == "isic2017":
        return [f"ISIC-2017_{split}_Data" for split, _ in _ISIC2017_SPLITS]
    return [split for split, _ in _FOLDER_SPLITS]


def _prepare_out(out: Path) -> None:
    """Clear a previous synthetic output; refuse to write into a folder of someone else's files."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder. Choose another output path for the synthetic data.")
    out.mkdir(parents=True, exist_ok=True)
    ours = (out / COMPLETE_MARKER).exists() or (out / _STARTED_MARKER).exists()
    if any(out.iterdir()) and not ours:
        raise DataError(
            f"{out}: folder is not empty and holds no synthetic data ({COMPLETE_MARKER} missing). "
            "Synthetic generation clears its output folder: give an empty or new folder."
        )
    for child in out.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    wh = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(wh) != 2 or not all(isinstance(s, int | np.integer) and s >= 16 for s in wh):
        raise ConfigError(f"synthetic size={size!r}: give an int >= 16 (square) or a (width, height) pair of them.")
    return int(wh[0]), int(wh[1])


def _normalise_frequencies(frequencies: dict[str, float] | None, layout: str) -> dict[str, float]:
    frequencies = dict(DEFAULT_CLASS_FREQUENCIES if frequencies is None else frequencies)
    unknown = sorted(set(frequencies) - set(ISIC_CLASSES))
    if unknown:
        raise ConfigError(f"synthetic class_frequencies: unknown class(es) {unknown}; use {list(ISIC_CLASSES)}.")
    if any(not math.isfinite(f) or f < 0 for f in frequencies.values()):
        raise ConfigError(f"synthetic class_frequencies={frequencies}: every frequency must be a finite number >= 0.")
    allowed = ISIC2017_CLASSES if layout == "isic2017" else ISIC_CLASSES
    kept = {cls: float(frequencies.get(cls, 0.0)) for cls in ISIC_CLASSES if cls in allowed}
    total = sum(kept.values())
    if total <= 0:
        raise ConfigError(
            f"synthetic class_frequencies={frequencies}: no positive frequency for the classes of layout "
            f"'{layout}' ({list(allowed)})."
        )
    return {cls: f / total for cls, f in kept.items() if f > 0}


def _parameters(n, size, layout, seed, class_frequencies) -> dict:
    if layout not in LAYOUTS:
        raise ConfigError(f"synthetic layout='{layout}': choose one of {list(LAYOUTS)}.")
    if not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"synthetic n={n!r}: the number of images must be an int >= 1.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"synthetic seed={seed!r}: give an int >= 0.")
    return {
        "generator_version": GENERATOR_VERSION,
        "n": int(n),
        "size": list(_parse_size(size)),
        "layout": layout,
        "seed": int(seed),
        "class_frequencies": {c: round(f, 12) for c, f in _normalise_frequencies(class_frequencies, layout).items()},
    }


def generate(
    out: str | Path,
    n: int = 2000,
    size: int | tuple[int, int] = 256,
    layout: str = "isic2019",
    seed: int = 0,
    workers: int | None = None,
    class_frequencies: dict[str, float] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic images and their CSVs into ``out`` in the official ``layout``; returns ``out``.

    ``class_frequencies`` maps classes to relative image frequencies (absent classes get none).
    The folder is cleared first; ``.complete`` holding the parameters is written last.
    """
    params = _parameters(n, size, layout, seed, class_frequencies)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError(f"synthetic workers={workers}: give an int >= 1 (or None for all cores).")
    out = Path(out).expanduser().resolve()
    _prepare_out(out)
    (out / _STARTED_MARKER).write_text(json.dumps(params, indent=2))

    lesions = _plan_lesions(params["n"], params["class_frequencies"], params["seed"])
    if layout == "isic2017":
        lesions = _assign_splits(lesions, _ISIC2017_SPLITS)
    elif layout == "folder":
        lesions = _assign_splits(lesions, _FOLDER_SPLITS)
    jobs = _jobs(lesions, layout, params["seed"])
    for relpath in {str(Path(job.relpath).parent) for job, _ in jobs} | set(_layout_dirs(layout)):
        (out / relpath).mkdir(parents=True, exist_ok=True)

    wh = (params["size"][0], params["size"][1])
    _render_all(out, [job for job, _ in jobs], wh, params["seed"], workers, f"{layout} {wh[0]}x{wh[1]}", progress)
    _write_tables(out, layout, jobs)
    tmp = out / (COMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps(params, indent=2))
    os.replace(tmp, out / COMPLETE_MARKER)
    (out / _STARTED_MARKER).unlink()
    return out


def ensure_synthetic(
    out: str | Path,
    n: int,
    size: int | tuple[int, int],
    layout: str = "isic2019",
    seed: int = 0,
    *,
    class_frequencies: dict[str, float] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate into ``out`` unless a complete generation with the same parameters is already there."""
    out = Path(out).expanduser().resolve()
    marker = out / COMPLETE_MARKER
    wanted = _parameters(n, size, layout, seed, class_frequencies)
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except json.JSONDecodeError:
            found = None
        if found == wanted:
            return out
    return generate(out, n, size, layout, seed, workers, class_frequencies, progress)


def _size_arg(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            width, height = text.lower().split("x")
            return int(width), int(height)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}': give an int (256) or WIDTHxHEIGHT (1024x768)") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m melanoma_lit.data.synthetic", description="Write a synthetic dermoscopy dataset."
    )
    parser.add_argument("--out", required=True, help="output folder (cleared if it holds an earlier synthetic set)")
    parser.add_argument("--n", type=int, default=2000, help="number of images")
    parser.add_argument("--size", type=_size_arg, default=256, help="square side (256) or WIDTHxHEIGHT (1024x768)")
    parser.add_argument("--layout", choices=LAYOUTS, default="isic2019")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        path = generate(
            args.out, args.n, args.size, args.layout, args.seed, args.workers, progress=not args.no_progress
        )
    except (ConfigError, DataError) as error:
        parser.exit(2, f"error: {error}\n")
    print(path)


if __name__ == "__main__":
    main()
