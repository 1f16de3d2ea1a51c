"""timm backbones by name, their preprocessing, and weights that work offline."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config

from melanoma_lit.data.transforms import Preprocessing
from melanoma_lit.errors import ConfigError


@lru_cache(maxsize=1)
def _known_models() -> frozenset[str]:
    return frozenset(timm.list_models())


def check_model_name(name: str) -> None:
    if name in _known_models():
        return
    close = difflib.get_close_matches(name, sorted(_known_models()), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown timm backbone '{name}'.{hint} Pick a config with backbone=resnet18|resnet152|inception_v3|"
        "densenet201|inception_resnet_v2, or any timm model with backbone.name=<timm name> (see timm.list_models())."
    )


def preprocessing_for(name: str, input_size: int | None = None) -> Preprocessing:
    """The model's own pretrained data config (size, mean/std, crop_pct, interpolation), size overridable."""
    check_model_name(name)
    pretrained_cfg = timm.get_pretrained_cfg(name)
    config = resolve_data_config({}, pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else {})
    _, height, width = config["input_size"]
    if input_size:
        check_input_size(name, int(input_size), native=max(height, width), fixed=pretrained_cfg.fixed_input_size)
        height = width = int(input_size)
    return Preprocessing(
        input_size=(height, width),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=float(config["crop_pct"]),
        interpolation=str(config["interpolation"]),
    )


def check_input_size(name: str, side: int, native: int, fixed: bool = False) -> None:
    """Fail at configuration time, not deep inside the first batch, when a model cannot take ``side`` px."""
    if fixed and side != native:
        raise ConfigError(f"data.input_size={side}: '{name}' takes only {native}x{native} inputs; use {native}.")
    if side >= native:
        return
    network = _shape_probe(name, native)
    if network is None or _runs_at(network, side):
        return
    low, high = side, native  # fails at low, runs at high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _runs_at(network, middle) else (middle, high)
    raise ConfigError(
        f"data.input_size={side} is too small for '{name}': its layers need at least {high}x{high} pixels "
        f"(native size {native}). Set data.input_size>={high}, or null for the native size."
    )


@lru_cache(maxsize=8)
def _shape_probe(name: str, native: int) -> nn.Module | None:
    """The model on the meta device (shapes only, no memory, no weights); None where it cannot be built so."""
    try:
        with torch.device("meta"):
            network = timm.create_model(name, pretrained=False, num_classes=0, global_pool="").eval()
    except Exception:
        return None
    return network if _runs_at(network, native) else None


def _runs_at(network: nn.Module, side: int) -> bool:
    try:
        with torch.no_grad():
            network(torch.empty(2, 3, side, side, device="meta"))
    except (RuntimeError, ValueError, AssertionError):
        return False
    return True


def create_backbone(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    drop_path_rate: float | None = None,
) -> nn.Module:
    """A timm model without classifier or pooling: the head owns both."""
    check_model_name(name)
    kwargs: dict = {"num_classes": 0, "global_pool": ""}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if checkpoint_path:
        if not Path(checkpoint_path).is_file():
            raise ConfigError(
                f"backbone.checkpoint_path={checkpoint_path}: file not found. Point it at a timm weights file "
                "(.pth/.bin/.safetensors) copied to this machine."
            )
        try:
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint_path)}, **kwargs
            )
        except Exception as error:
            raise ConfigError(
                f"backbone.checkpoint_path={checkpoint_path}: cannot load it into '{name}' "
                f"({type(error).__name__}: {str(error)[:300]}). Use weights saved from a '{name}' model "
                "(timm parameter names), or set backbone.name to the architecture the file belongs to."
            ) from error
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as error:
        if not pretrained:
            raise
        raise ConfigError(
            f"cannot download pretrained weights for '{name}' ({type(error).__name__}: {error}). "
            "Without network access either train from scratch with backbone.pretrained=false, or copy the "
            "weights to this machine and set backbone.checkpoint_path=/path/to/weights."
        ) from error
