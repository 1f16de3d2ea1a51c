"""The fast path: no host-device synchronisation per training step."""

from __future__ import annotations

import sys
from typing import Any

import torch

from melanoma_lit.training import train
from tests.conftest import SMALL_SYNTHETIC


def test_training_steps_read_nothing_back_from_the_device(compose_train, monkeypatch) -> None:
    """Reading a tensor's value (``.item()``) waits for the GPU's queue: once per step, the GPU idles between steps.

    Lightning turns progress-bar values into Python numbers after every batch, so a per-step value logged with
    ``prog_bar=True`` did exactly that. The optimisers' own ``.item()`` calls read CPU step counters.
    """
    steps = 8
    reads = []
    item = torch.Tensor.item

    def counted_item(tensor: torch.Tensor) -> Any:
        if not sys._getframe(1).f_globals.get("__name__", "").startswith("torch."):
            reads.append(tensor)
        return item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    cfg = compose_train(
        "debug=limit",
        "backbone.input_size=32",
        *SMALL_SYNTHETIC,
        "data.batch_size=4",
        "scheduler=none",
        f"trainer.limit_train_batches={steps}",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=100",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
    )
    train(cfg)
    assert len(reads) < steps / 4
