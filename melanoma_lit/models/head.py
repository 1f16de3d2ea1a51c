"""The classification head: pooling -> BatchNorm -> ReLU -> Dropout -> Linear (one logit per class)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d

from melanoma_lit.errors import ConfigError


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent (p=1 is average, p->inf is max)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)


def make_pool(kind: str) -> tuple[nn.Module, int]:
    """The pooling layer and how many feature copies it emits (catavgmax doubles the channels)."""
    if kind == "gem":
        return GeM(), 1
    if kind not in ("avg", "max", "avgmax", "catavgmax"):
        raise ConfigError(f"model.head.pool={kind!r}: choose avg, max, avgmax, catavgmax or gem")
    return SelectAdaptivePool2d(pool_type=kind, flatten=True), 2 if kind == "catavgmax" else 1


class MetadataBranch(nn.Module):
    """Encoded patient metadata (data.metadata) -> a few dozen features: Linear -> BN -> ReLU -> Dropout."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, out_features),
            nn.BatchNorm1d(out_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, metadata: torch.Tensor) -> torch.Tensor:
        return self.layers(metadata)


class LesionHead(nn.Module):
    """Sigmoid multi-label head; the optional hidden layer is Linear -> BN -> ReLU -> Dropout.

    With ``metadata_features`` > 0, a MetadataBranch's ``metadata_dim`` features join the pooled image features
    before the first BatchNorm; without, the head (and its state_dict) is the image-only one.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool: str = "avg",
        dropout: float = 0.3,
        hidden_dim: int = 0,
        metadata_features: int = 0,
        metadata_dim: int = 32,
    ) -> None:
        super().__init__()
        self.pool, multiplier = make_pool(pool)
        width = in_features * multiplier
        self.metadata = MetadataBranch(metadata_features, metadata_dim, dropout) if metadata_features else None
        width += metadata_dim if metadata_features else 0
        layers: list[nn.Module] = [nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        if hidden_dim:
            layers += [
                nn.Linear(width, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.pool(features)
        if self.metadata is None:
            return self.layers(pooled)
        if metadata is None:
            raise ConfigError(
                "this model fuses patient metadata (model.metadata) but got images alone: pass the encoded "
                "metadata rows (data.metadata.MetadataEncoder) with the images."
            )
        return self.layers(torch.cat([pooled, self.metadata(metadata.to(pooled.dtype))], dim=1))


class LesionNet(nn.Module):
    """Backbone feature map (and encoded metadata, for a fusing head) -> head logits. Probabilities come from
    LesionClassifier.predict_proba, which divides by the checkpoint's temperature first."""

    def __init__(self, backbone: nn.Module, head: LesionHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.backbone.forward_features(images), metadata)
