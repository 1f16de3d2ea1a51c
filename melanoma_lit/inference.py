"""Inference shared by train, evaluate and predict: checkpoints in, probability tables out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from melanoma_lit.module import LesionClassifier


def predict_table(
    trainer: pl.Trainer, model: LesionClassifier, loader: torch.utils.data.DataLoader, ckpt_path: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and the dataset rows they belong to, in row order.

    All rows unless the trainer limits prediction batches (``trainer.limit_predict_batches``).
    """
    batches = trainer.predict(model, dataloaders=loader, ckpt_path=ckpt_path)
    probs = torch.cat([b["probs"] for b in batches]).numpy()
    rows = torch.cat([b["index"] for b in batches]).numpy()
    order = np.argsort(rows, kind="stable")
    return probs[order], rows[order]


def write_predictions(path: Path, table: pd.DataFrame, probs: np.ndarray, classes: list[str], **extra: Any) -> None:
    """One row per image with one probability column per class, named as ISIC names them."""
    frame = pd.DataFrame({"image": table["image_id"].to_numpy()})
    for index, cls in enumerate(classes):
        frame[cls] = probs[:, index]
    for key, value in extra.items():
        frame[key] = value
    frame.to_csv(path, index=False, float_format="%.6f")
