"""Test-time augmentation over the dihedral group: lesions have no canonical orientation."""

from __future__ import annotations

from collections.abc import Callable

import torch


def dihedral(images: torch.Tensor, index: int) -> torch.Tensor:
    """The ``index``-th of the 8 rotations/reflections of a square NCHW batch (0 = identity)."""
    if index < 0 or index > 7:
        raise ValueError(f"dihedral index {index} is outside 0..7")
    rotated = torch.rot90(images, k=index % 4, dims=(2, 3))
    return rotated.flip(3) if index >= 4 else rotated


def tta_probabilities(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, n: int) -> torch.Tensor:
    """Mean sigmoid probability over the first ``n`` dihedral views (n=1: no TTA; 2: + h-flip order below)."""
    order = (0, 4, 2, 6, 1, 3, 5, 7)  # identity, mirror, 180°, mirrored 180°, then the 90° views
    views = order[: max(1, min(n, 8))]
    square = images.shape[-1] == images.shape[-2]
    views = views if square else tuple(v for v in views if v in (0, 2, 4, 6))
    return torch.stack([torch.sigmoid(predict(dihedral(images, v))) for v in views]).mean(0)
