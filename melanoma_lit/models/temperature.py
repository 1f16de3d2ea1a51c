"""Temperature scaling (Guo et al. 2017): probabilities ``sigmoid(logit / T)`` with T fitted on held-out logits.

A positive T rescales each logit monotonically, so every per-class ranking (AUC, AP) and every ``p > 0.5``
decision stays; one T for all classes (``global``) also keeps the argmax across classes, one per class
(``per_class``) may change it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from melanoma_lit.data.atomic import replaced
from melanoma_lit.errors import ConfigError

log = logging.getLogger(__name__)

TEMPERATURE_MODES: tuple[str, ...] = ("none", "global", "per_class")
# A class whose validation logits separate perfectly would drive T to 0; the fit stays inside these bounds.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, mode: str) -> torch.Tensor:
    """The temperature of each class ``[K]`` minimising the mean BCE of ``logits / T`` over the known entries.

    LBFGS over log T from T = 1, in float64 on the CPU, so every rank and every rerun gets the same numbers;
    ``mode="none"`` gives ones, ``global`` one shared value, ``per_class`` one per class (a class without a
    known entry keeps 1).
    """
    if mode not in TEMPERATURE_MODES:
        raise ConfigError(f"model.temperature={mode!r}: choose one of {', '.join(TEMPERATURE_MODES)}.")
    classes = logits.shape[1]
    if mode == "none":
        return torch.ones(classes)
    logits, targets = logits.detach().cpu().double(), targets.detach().cpu().double()
    known = known.detach().cpu().bool()
    log_temperature = torch.zeros(1 if mode == "global" else classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_temperature],
        lr=1.0,
        max_iter=100,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scaled = logits / log_temperature.exp().expand(classes)
        loss = F.binary_cross_entropy_with_logits(scaled[known], targets[known])
        loss.backward()
        return loss

    if known.any():
        optimizer.step(closure)
    temperature = log_temperature.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)
    return temperature.expand(classes).float().clone()


def store_temperature(checkpoint: str | Path, temperature: torch.Tensor) -> None:
    """Write ``temperature`` into a training checkpoint's weights, replacing the file atomically."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    content["state_dict"]["temperature"] = temperature.detach().cpu().float().clone()
    with replaced(Path(checkpoint)) as partial:
        torch.save(content, partial)
