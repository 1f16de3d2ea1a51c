"""One lesion per diagnosis, drawn in its own frame with the features dermatologists read.

Each recipe turns a random generator into a ``Lesion``: outline (asymmetry, border), colours, and the
structures typical of its class (network, globules, veil, vessels, cysts, lacunae...). How the lesion is
posed and photographed is ``render``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from melanoma_lit.data.synthetic.palette import (
    BLACK,
    BLUE_GREY,
    BLUE_WHITE,
    BROWN,
    DARK_BROWN,
    DARK_RED,
    KERATIN,
    PEARL,
    PINK,
    PURPLE,
    RED,
    TAN,
    WHITE,
    jittered,
    mix,
)


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
class Lesion:
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
) -> Lesion:
    return Lesion(
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
    rng: np.random.Generator, lesion: Lesion, n: int, where: tuple[float, float], size: tuple[float, float], colour
) -> None:
    for x, y in _points_in_disc(rng, n, where[1] * lesion.radius, where[0] * lesion.radius):
        lesion.dots.append((x, y, rng.uniform(*size) * lesion.radius, jittered(rng, colour, 0.04)))


def _nevus(rng: np.random.Generator) -> Lesion:
    lesion = _shape(
        rng,
        "NV",
        radius=(0.36, 0.55),
        aspect=(1.0, 1.15),
        harmonics=_harmonics(rng, (2, 3), (0.0, 0.04)),
        edge=(0.08, 0.18),
        opacity=(0.92, 0.98),
        base=jittered(rng, mix(TAN, DARK_BROWN, rng.uniform(0.3, 0.75))),
        mottle=(0.04, 0.08),
    )
    darker = rng.random() < 0.6
    lesion.blobs.append(
        _Blob((0.0, 0.0), 0.5 * lesion.radius, jittered(rng, DARK_BROWN if darker else TAN), rng.uniform(0.25, 0.45))
    )
    if rng.random() < 0.15:  # dysplastic: an eccentric dark area, the melanoma look-alike
        centre = tuple(_points_in_disc(rng, 1, 0.5 * lesion.radius)[0])
        lesion.blobs.append(_Blob(centre, 0.3 * lesion.radius, jittered(rng, DARK_BROWN), 0.5, 0.6))
    lesion.network = _Network(
        frequency=6.0 / lesion.radius,
        angle=rng.uniform(0, np.pi),
        phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        darkness=rng.uniform(0.15, 0.3),
        colour=jittered(rng, DARK_BROWN),
    )
    if rng.random() < 0.4:  # globular nevus: regular brown globules
        _dots(rng, lesion, int(rng.integers(8, 20)), (0.0, 0.8), (0.06, 0.09), DARK_BROWN)
    return lesion


def _melanoma(rng: np.random.Generator) -> Lesion:
    harmonics = np.vstack([_harmonics(rng, (1, 2, 3), (0.06, 0.16)), _harmonics(rng, range(4, 10), (0.015, 0.05))])
    lesion = _shape(
        rng,
        "MEL",
        radius=(0.5, 0.85),
        aspect=(1.1, 1.5),
        harmonics=harmonics,
        edge=(0.05, 0.2),
        opacity=(0.95, 0.99),
        base=jittered(rng, BROWN, 0.08),
        mottle=(0.10, 0.18),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(2, 5)), 0.6 * r):
        colour = BLACK if rng.random() < 0.5 else DARK_BROWN
        lesion.blobs.append(
            _Blob(tuple(centre), rng.uniform(0.18, 0.35) * r, jittered(rng, colour), rng.uniform(0.6, 0.9), 0.6)
        )
    for colour, chance, strength in (
        (TAN, 0.7, 0.6),
        (BLUE_WHITE, 0.65, 0.75),
        (PINK, 0.35, 0.6),
        (WHITE, 0.35, 0.5),
    ):
        if rng.random() < chance:  # blue-white veil, red areas, regression
            centre = tuple(_points_in_disc(rng, 1, 0.6 * r)[0])
            lesion.blobs.append(_Blob(centre, rng.uniform(0.2, 0.35) * r, jittered(rng, colour), strength, 0.8))
    lesion.network = _Network(
        frequency=rng.uniform(3.5, 6.0) / r,
        angle=rng.uniform(0, np.pi),
        phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        darkness=rng.uniform(0.3, 0.5),
        colour=jittered(rng, BLACK),
    )
    _dots(rng, lesion, int(rng.integers(8, 25)), (0.5, 1.0), (0.02, 0.07), BLACK)
    if rng.random() < 0.4:  # streaks / pseudopods at the periphery
        for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))):
            direction = np.array([np.cos(angle), np.sin(angle)])
            border = lesion.border(angle)
            points = np.outer([0.85 * border, border + rng.uniform(0.08, 0.2) * r], direction)
            lesion.lines.append((points, rng.uniform(0.015, 0.03), jittered(rng, DARK_BROWN)))
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


def _basal_cell_carcinoma(rng: np.random.Generator) -> Lesion:
    lesion = _shape(
        rng,
        "BCC",
        radius=(0.45, 0.7),
        aspect=(1.0, 1.4),
        harmonics=_harmonics(rng, (2, 3, 4, 5), (0.03, 0.09)),
        edge=(0.15, 0.3),
        opacity=(0.75, 0.9),
        base=jittered(rng, mix(PINK, PEARL, rng.uniform(0.3, 1.0)), 0.03),
        mottle=(0.05, 0.1),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(1, 3)), 0.5 * r):
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.15, 0.3) * r, jittered(rng, WHITE), 0.45, 0.5))
    if rng.random() < 0.5:  # blue-grey ovoid nests
        for centre in _points_in_disc(rng, int(rng.integers(2, 6)), 0.7 * r):
            lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.06, 0.12) * r, jittered(rng, BLUE_GREY), 0.75))
    if rng.random() < 0.25:  # ulceration
        centre = tuple(_points_in_disc(rng, 1, 0.4 * r)[0])
        lesion.blobs.append(_Blob(centre, 0.12 * r, jittered(rng, DARK_RED), 0.85, 0.5))
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(3, 6))):
        start = np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(0.6, 0.9) * r
        inward = angle + np.pi + rng.normal(0, 0.5)
        for points, width in _vessel_tree(rng, start, inward, rng.uniform(0.35, 0.55) * r, rng.uniform(0.018, 0.03), 3):
            lesion.lines.append((points, width, jittered(rng, RED, 0.04)))
    return lesion


def _actinic_keratosis(rng: np.random.Generator) -> Lesion:
    lesion = _shape(
        rng,
        "AK",
        radius=(0.55, 0.85),
        aspect=(1.0, 1.5),
        harmonics=_harmonics(rng, (1, 2, 3, 4), (0.05, 0.12)),
        edge=(0.45, 0.7),
        opacity=(0.65, 0.85),
        base=jittered(rng, mix(PINK, RED, rng.uniform(0.25, 0.5)), 0.04),
        mottle=(0.12, 0.2),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(2, 4)), 0.6 * r):
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.2, 0.35) * r, jittered(rng, RED), 0.4, 0.8))
    if rng.random() < 0.3:  # pigmented actinic keratosis
        centre = tuple(_points_in_disc(rng, 1, 0.5 * r)[0])
        lesion.blobs.append(_Blob(centre, 0.3 * r, jittered(rng, BROWN), 0.45, 0.8))
    for centre in _points_in_disc(rng, int(rng.integers(2, 5)), 0.7 * r):  # scale
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.08, 0.16) * r, jittered(rng, WHITE), 0.55, 1.0))
    _dots(rng, lesion, int(rng.integers(25, 60)), (0.0, 0.9), (0.02, 0.045), KERATIN)  # follicular openings
    return lesion


def _benign_keratosis(rng: np.random.Generator) -> Lesion:
    harmonics = np.vstack([_harmonics(rng, (2, 3, 4), (0.04, 0.1)), _harmonics(rng, range(5, 9), (0.01, 0.03))])
    lesion = _shape(
        rng,
        "BKL",
        radius=(0.48, 0.75),
        aspect=(1.0, 1.5),
        harmonics=harmonics,
        edge=(0.03, 0.07),
        opacity=(0.88, 0.95),
        base=jittered(rng, mix(TAN, BROWN, rng.uniform(0.0, 0.5)) * np.array([1.0, 1.0, 0.85])),
        mottle=(0.12, 0.2),
    )
    r = lesion.radius
    for centre in _points_in_disc(rng, int(rng.integers(2, 4)), 0.6 * r):
        colour = TAN if rng.random() < 0.5 else BROWN
        lesion.blobs.append(_Blob(tuple(centre), rng.uniform(0.2, 0.35) * r, jittered(rng, colour), 0.35, 0.8))
    _dots(rng, lesion, int(rng.integers(6, 18)), (0.0, 0.85), (0.04, 0.08), WHITE)  # milia-like cysts
    _dots(rng, lesion, int(rng.integers(4, 12)), (0.0, 0.85), (0.04, 0.08), DARK_BROWN)  # comedo-like openings
    for _ in range(int(rng.integers(3, 8))):  # fissures and ridges
        start = _points_in_disc(rng, 1, 0.7 * r)[0]
        steps = np.cumsum(rng.normal(0, 0.4, 5)) + rng.uniform(0, 2 * np.pi)
        points = start + np.cumsum(np.column_stack([np.cos(steps), np.sin(steps)]) * 0.08 * r, axis=0)
        lesion.lines.append((np.vstack([start, points]), 0.02, jittered(rng, DARK_BROWN)))
    return lesion


def _dermatofibroma(rng: np.random.Generator) -> Lesion:
    lesion = _shape(
        rng,
        "DF",
        radius=(0.3, 0.45),
        aspect=(1.0, 1.25),
        harmonics=_harmonics(rng, (2, 3), (0.01, 0.05)),
        edge=(0.3, 0.5),
        opacity=(0.85, 0.92),
        base=jittered(rng, mix(TAN, BROWN, rng.uniform(0.2, 0.6))),
        mottle=(0.05, 0.1),
    )
    r = lesion.radius
    centre = tuple(rng.normal(0, 0.05 * r, 2))
    lesion.blobs.append(_Blob(centre, rng.uniform(0.28, 0.36) * r, jittered(rng, WHITE, 0.03), 0.95, 0.4))
    lesion.network = _Network(
        frequency=rng.uniform(5, 7) / r,
        angle=rng.uniform(0, np.pi),
        phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        darkness=rng.uniform(0.3, 0.45),
        colour=jittered(rng, DARK_BROWN),
        ring=0.7,
    )
    return lesion


def _vascular(rng: np.random.Generator) -> Lesion:
    lesion = _shape(
        rng,
        "VASC",
        radius=(0.35, 0.55),
        aspect=(1.0, 1.3),
        harmonics=_harmonics(rng, (3, 4, 5, 6), (0.03, 0.08)),
        edge=(0.05, 0.1),
        opacity=(0.93, 0.98),
        base=jittered(rng, mix(PINK, RED, 0.25), 0.04),
        mottle=(0.04, 0.08),
    )
    r = lesion.radius
    for x, y in _points_in_disc(rng, int(rng.integers(10, 25)), 0.8 * r):  # lacunae
        colour = mix(RED, PURPLE, rng.uniform(0.0, 1.0)) * rng.uniform(0.6, 1.0)
        lesion.dots.append((x, y, rng.uniform(0.1, 0.2) * r, jittered(rng, colour, 0.04)))
    return lesion


def _squamous_cell_carcinoma(rng: np.random.Generator) -> Lesion:
    lesion = _shape(
        rng,
        "SCC",
        radius=(0.5, 0.75),
        aspect=(1.0, 1.4),
        harmonics=_harmonics(rng, (1, 2, 3, 4), (0.05, 0.12)),
        edge=(0.15, 0.3),
        opacity=(0.8, 0.9),
        base=jittered(rng, mix(PINK, RED, rng.uniform(0.35, 0.6)), 0.04),
        mottle=(0.08, 0.14),
    )
    r = lesion.radius
    centre = tuple(rng.normal(0, 0.1 * r, 2))
    lesion.blobs.append(_Blob(centre, rng.uniform(0.3, 0.42) * r, jittered(rng, KERATIN, 0.03), 0.95, 0.6))
    _dots(rng, lesion, int(rng.integers(10, 30)), (0.5, 0.95), (0.025, 0.05), RED)  # glomerular vessels
    _dots(rng, lesion, int(rng.integers(10, 25)), (0.0, 0.5), (0.02, 0.05), WHITE)  # keratin scale
    if rng.random() < 0.4:  # blood spots
        _dots(rng, lesion, int(rng.integers(2, 5)), (0.2, 0.7), (0.05, 0.09), DARK_RED)
    return lesion


RECIPES: dict[str, Callable[[np.random.Generator], Lesion]] = {
    "MEL": _melanoma,
    "NV": _nevus,
    "BCC": _basal_cell_carcinoma,
    "AK": _actinic_keratosis,
    "BKL": _benign_keratosis,
    "DF": _dermatofibroma,
    "VASC": _vascular,
    "SCC": _squamous_cell_carcinoma,
}
