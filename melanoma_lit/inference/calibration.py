"""Temperature scaling after training: fitted on the validation fold's logits of the best checkpoint, stored in it,
and the fold predicted again with it (models.temperature holds the fit and the checkpoint rewrite)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from melanoma_lit.data.datamodule import LesionDataModule
from melanoma_lit.inference.predictions import predict_table
from melanoma_lit.metrics.arrays import check_inputs
from melanoma_lit.metrics.calibration import calibration_metrics
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.models.temperature import fit_temperature, store_temperature

log = logging.getLogger(__name__)


def calibrate_on_validation(
    mode: str,
    trainer: pl.Trainer,
    model: LesionClassifier,
    datamodule: LesionDataModule,
    best: str,
    probs: np.ndarray,
    logits: np.ndarray,
    truth: np.ndarray,
    known: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit the temperature on the validation fold's logits of the best checkpoint, store it in best.ckpt and
    predict the fold again with it; returns the report (temperatures, NLL and ECE before and after) and the new
    probabilities.

    The second pass is not only for TTA (each view's logits are divided by T before the views' mean): at its end
    the loggers that keep checkpoints (W&B ``log_model``) upload the rewritten best.ckpt, so the tracked model holds
    T. Without it sigmoid(logits / T) of the logits in hand would do, and W&B would keep the uncalibrated file."""
    classes = datamodule.classes
    temperature = fit_temperature(torch.from_numpy(logits), torch.from_numpy(truth), torch.from_numpy(known), mode)
    model.temperature.copy_(temperature.to(model.temperature.device))
    if best and trainer.is_global_zero:
        store_temperature(best, temperature)
    trainer.strategy.barrier()  # every rank reads best.ckpt after rank 0 rewrote it
    if not best:
        log.warning("temperature scaling: no best checkpoint to store T in; it holds for this run's own predictions")
    calibrated, _, _ = predict_table(trainer, model, datamodule.val_dataloader(), best or None)
    before, after = (calibration_metrics(*check_inputs(p, truth, known, classes), classes) for p in (probs, calibrated))
    report = {
        "temperature_mode": mode,
        "temperature": dict(zip(classes, temperature.tolist(), strict=True)),
        "before": {"nll": before["nll"], "ece_macro": before["ece_macro"]},
        "after": {"nll": after["nll"], "ece_macro": after["ece_macro"]},
    }
    shown = (
        f"{temperature[0]:.3f}"
        if mode == "global"
        else ", ".join(f"{c} {t:.3f}" for c, t in zip(classes, temperature.tolist(), strict=True))
    )
    log.info(
        "temperature scaling (%s): T = %s; validation NLL %.4f -> %.4f, ECE macro %.4f -> %.4f",
        mode,
        shown,
        before["nll"],
        after["nll"],
        before["ece_macro"],
        after["ece_macro"],
    )
    return report, calibrated
