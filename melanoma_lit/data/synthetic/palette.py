"""The reference colours of the drawing and their random variation, shared by the lesions and the photograph."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Reference colours, RGB in [0, 1].
TAN = (0.80, 0.56, 0.40)
BROWN = (0.56, 0.32, 0.19)
DARK_BROWN = (0.33, 0.17, 0.10)
BLACK = (0.13, 0.09, 0.08)
BLUE_GREY = (0.40, 0.45, 0.57)
BLUE_WHITE = (0.66, 0.72, 0.82)
WHITE = (0.97, 0.95, 0.92)
PINK = (0.93, 0.66, 0.66)
PEARL = (0.95, 0.82, 0.82)
RED = (0.80, 0.14, 0.18)
DARK_RED = (0.45, 0.10, 0.10)
PURPLE = (0.42, 0.12, 0.30)
KERATIN = (0.95, 0.90, 0.70)


def jittered(rng: np.random.Generator, base: Sequence[float], jitter: float = 0.05) -> np.ndarray:
    """``base`` varied per channel and in brightness, as one lesion's or one hair's shade of it."""
    colour = np.asarray(base) * rng.normal(1.0, jitter / 2, 3) * rng.normal(1.0, jitter)
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def mix(a: Sequence[float], b: Sequence[float], t: float) -> np.ndarray:
    """The colour ``t`` of the way from ``a`` to ``b``."""
    return (1 - t) * np.asarray(a) + t * np.asarray(b)
