"""Multi-label losses that ignore labels a source did not decide."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedBCEWithLogits(nn.Module):
    """BCE-with-logits averaged over known entries only; masked entries give neither loss nor gradient.

    ``pos_weight`` multiplies each class's positive terms (a tensor or a list, one per class; the saved
    hyper-parameters hold a list); ``focal_gamma`` > 0 turns it into focal loss; ``label_smoothing`` pulls targets
    towards 0.5.
    """

    def __init__(
        self,
        pos_weight: torch.Tensor | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 0.0,
    ) -> None:
        super().__init__()
        weights = torch.as_tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None
        self.register_buffer("pos_weight", weights)
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        # Masked entries are replaced before the loss, so a NaN target or an infinite focal slope there
        # cannot leak into the gradient (0 * inf would be NaN).
        known = known.bool()
        logits = torch.where(known, logits.float(), 0.0)
        targets = torch.where(known, targets.float(), 0.0)
        soft = targets * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        loss = F.binary_cross_entropy_with_logits(logits, soft, pos_weight=self.pos_weight, reduction="none")
        if self.focal_gamma > 0:
            probs = torch.sigmoid(logits)
            p_true = probs * targets + (1 - probs) * (1 - targets)
            loss = loss * (1 - p_true).pow(self.focal_gamma)
        weight = known.to(loss.dtype)
        return (loss * weight).sum() / weight.sum().clamp_min(1.0)
