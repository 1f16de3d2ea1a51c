"""Optimisation recipe: discriminative learning rates, optimisers, schedulers and backbone freezing.

The param groups hold every parameter of the net from the first step, each at its final learning rate, so
that freezing only toggles ``requires_grad`` and schedulers only ever scale each group's own rate.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable

import torch
import torch.nn as nn
from timm.models import group_parameters
from timm.optim import auto_group_layers
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from melanoma_lit.errors import ConfigError
from melanoma_lit.models.head import LesionNet

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "onecycle", "none")


def backbone_layer_ids(backbone: nn.Module) -> dict[str, int]:
    """Parameter name -> depth index (0 = stem), from the model's own stage grouping where timm defines one."""
    if hasattr(backbone, "group_matcher"):
        return group_parameters(backbone, backbone.group_matcher(coarse=True), reverse=True)
    return auto_group_layers(backbone)


def _no_decay(name: str, param: nn.Parameter, patterns: set[str]) -> bool:
    """timm's convention: biases, norm weights, scalars and the model's own no_weight_decay() names."""
    return param.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatch(name, p) for p in patterns)


def param_groups(net: LesionNet, lr: float, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Head at ``lr``; backbone stage i of n at ``lr * layer_decay ** (n - i)``; no decay on bias/norm.

    Each group's ``lr`` is already scaled (torch schedulers scale the group's own initial rate, which keeps the
    ratios); ``lr_ratio`` records the factor and ``name`` labels the group for learning-rate logging. The field
    is deliberately not timm's ``lr_scale``, which timm schedulers would apply a second time. Frozen parameters
    are included, so unfreezing needs no optimizer surgery.
    """
    if lr <= 0:
        raise ConfigError(f"optimizer.lr={lr}: the learning rate must be positive")
    if not 0 < layer_decay <= 1:
        raise ConfigError(f"optimizer.layer_decay={layer_decay}: use a value in (0, 1]; 1 gives every layer lr")
    backbone = net.backbone
    layer_of = backbone_layer_ids(backbone)
    depth = max(layer_of.values(), default=0) + 1
    no_decay_patterns = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()

    groups: dict[tuple[int, bool], dict] = {}
    for name, param in net.named_parameters():
        if name.startswith("backbone."):
            local = name.removeprefix("backbone.")
            layer = layer_of.get(local, depth - 1)
            ratio, label = layer_decay ** (depth - layer), f"backbone.layer{layer}"
            decay = not _no_decay(local, param, no_decay_patterns)
        else:
            layer, ratio, label = depth, 1.0, "head"
            decay = not _no_decay(name, param, set())
        key = (layer, decay)
        if key not in groups:
            groups[key] = {
                "name": f"{label}.{'decay' if decay else 'no_decay'}",
                "params": [],
                "lr": lr * ratio,
                "lr_ratio": ratio,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(
    net: LesionNet,
    name: str,
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> Optimizer:
    """Adam (L2 decay), AdamW (decoupled decay) or Nesterov SGD over :func:`param_groups`."""
    groups = param_groups(net, lr, weight_decay, layer_decay)
    kind = name.lower()
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ConfigError(f"optimizer.name={name!r} is unknown: choose one of {', '.join(OPTIMIZERS)}")


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float) -> Callable[[int], float]:
    """Factor on each group's lr: linear ramp to 1 over ``warmup_steps``, then cosine down to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _check_steps(name: str, total_steps: int | None, warmup_steps: int) -> int:
    if total_steps is None or total_steps < 1:
        raise ConfigError(f"scheduler {name!r} needs total_steps >= 1 (got {total_steps}): pass the trainer's steps")
    if not 0 <= warmup_steps < total_steps:
        raise ConfigError(
            f"scheduler.warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}): shorten the warm-up"
        )
    return total_steps


def build_scheduler(
    optimizer: Optimizer,
    name: str | None,
    *,
    monitor: str | None = None,
    monitor_mode: str = "max",
    total_steps: int | None = None,
    warmup_steps: int = 0,
    patience: int = 2,
    factor: float = 0.5,
    min_lr: float = 1e-7,
) -> dict | None:
    """A Lightning ``lr_scheduler`` config dict, or None for a constant rate.

    ``min_lr`` is the floor of the largest group's rate; the others stop at the same fraction, so the
    discriminative ratios hold to the end. ``onecycle`` peaks each group at its own lr after ``warmup_steps``
    (30% of training if 0).
    """
    kind = "none" if name is None else name.lower()
    if kind == "none":
        return None
    top_lr = max(group["lr"] for group in optimizer.param_groups)
    floor = min(1.0, min_lr / top_lr)
    if kind == "plateau":
        if not monitor:
            raise ConfigError("scheduler 'plateau' needs the monitored metric name (e.g. monitor='val/auc')")
        if monitor_mode not in ("min", "max"):
            raise ConfigError(f"monitor_mode={monitor_mode!r}: use 'max' for scores like AUC, 'min' for losses")
        scheduler = ReduceLROnPlateau(
            optimizer,
            mode=monitor_mode,
            factor=factor,
            patience=patience,
            min_lr=[group["lr"] * floor for group in optimizer.param_groups],
        )
        return {"scheduler": scheduler, "interval": "epoch", "frequency": 1, "monitor": monitor, "name": "lr"}
    if kind == "cosine":
        total = _check_steps(kind, total_steps, warmup_steps)
        scheduler = LambdaLR(optimizer, warmup_cosine(total, warmup_steps, floor))
        return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}
    if kind == "onecycle":
        total = _check_steps(kind, total_steps, warmup_steps)
        scheduler = OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=warmup_steps / total if warmup_steps else 0.3,
        )
        return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}
    raise ConfigError(f"scheduler.name={name!r} is unknown: choose one of {', '.join(SCHEDULERS)}")
