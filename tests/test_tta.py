"""Dihedral test-time augmentation."""

from __future__ import annotations

import torch

from melanoma_lit.models.tta import dihedral, tta_probabilities


def test_the_eight_dihedral_views_are_distinct_and_invertible() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = [dihedral(images, i) for i in range(8)]
    assert torch.equal(views[0], images)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_tta_averages_views_and_one_view_is_plain_sigmoid() -> None:
    images = torch.randn(2, 3, 8, 8)
    weights = torch.randn(3 * 8 * 8, 5)

    def linear(batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1) @ weights

    assert torch.allclose(tta_probabilities(linear, images, 1), torch.sigmoid(linear(images)))
    expected = torch.stack([torch.sigmoid(linear(dihedral(images, i))) for i in (0, 4)]).mean(0)
    assert torch.allclose(tta_probabilities(linear, images, 2), expected)
    assert tta_probabilities(linear, images, 8).shape == (2, 5)
