"""python -m melanoma_lit.train [overrides]: train one model; returns the monitored metric to sweepers."""

from __future__ import annotations

import json
import logging
import signal
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from melanoma_lit.callbacks.resilience import exit_code, hand_over_signal, keep_csv_history
from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.build import DataSpec
from melanoma_lit.data.datamodule import LesionDataModule
from melanoma_lit.data.table import known_mask, targets
from melanoma_lit.data.transforms import Augmentation
from melanoma_lit.errors import ConfigError
from melanoma_lit.inference.calibration import calibrate_on_validation
from melanoma_lit.inference.predictions import predict_table, write_predictions, write_submission
from melanoma_lit.metrics.challenges import challenge_files, check_scorable, get_challenge
from melanoma_lit.metrics.isic import compute_metrics
from melanoma_lit.models.backbone import preprocessing_for
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.runs.checks import check_config, check_paths
from melanoma_lit.runs.files import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    VAL_PREDICTIONS,
    check_resume,
    config_path,
    finished_metrics,
    finite,
    resolve_resume,
    write_metrics,
)
from melanoma_lit.runs.hydra_callbacks import note_interruption

log = logging.getLogger(__name__)
CHALLENGE_DIR = "challenges"  # <challenge>_truth.csv and <challenge>_predictions.csv of the validation fold


def build_datamodule(cfg: DictConfig) -> LesionDataModule:
    loader = cfg.data
    preprocessing = preprocessing_for(cfg.backbone.name, loader.input_size)
    return LesionDataModule(
        spec=DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True)),
        preprocessing=preprocessing,
        augmentation=Augmentation(**OmegaConf.to_container(cfg.augment, resolve=True)),
        batch_size=loader.batch_size,
        eval_batch_size=loader.get("eval_batch_size"),
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers,
        balanced_sampler=loader.balanced_sampler,
        metadata=cfg.model.get("metadata") or (),
    )


def build_model(cfg: DictConfig, datamodule: LesionDataModule) -> LesionClassifier:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    for name in datamodule.spec.challenges:  # before training, not at the first validation
        check_scorable(get_challenge(name), datamodule.classes)
    model = LesionClassifier(
        classes=datamodule.classes,
        backbone=OmegaConf.to_container(cfg.backbone, resolve=True),
        head=model_cfg["head"],
        loss=loss_settings(model_cfg["loss"], datamodule),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        preprocessing=asdict(datamodule.preprocessing),
        monitor=cfg.monitor,
        monitor_mode=cfg.monitor_mode,
        channels_last=model_cfg["channels_last"],
        tta=model_cfg["tta"],
        challenges=datamodule.spec.challenges,
        metadata=datamodule.metadata_encoder.settings() if datamodule.metadata_encoder else None,
    )
    if model_cfg.get("compile"):
        model.net.compile()  # in place: checkpoints keep the plain parameter names
    return model


def loss_settings(loss: dict[str, Any], datamodule: LesionDataModule) -> dict[str, Any]:
    """``model.loss`` as the criterion takes it: ``pos_weight: balanced`` becomes negatives/positives per class,
    counted on the training fold (the checkpoint keeps the numbers)."""
    weight = loss.get("pos_weight")
    if weight == "balanced":
        return {**loss, "pos_weight": datamodule.positive_weights().tolist()}
    if weight is not None and not (isinstance(weight, list) and len(weight) == len(datamodule.classes)):
        raise ConfigError(
            f"model.loss.pos_weight={weight!r}: use null (no weighting), balanced (negatives/positives per class on "
            f"the training fold) or a list of {len(datamodule.classes)} weights, one per class of data.classes."
        )
    return loss


def instantiate_all(section: DictConfig | None) -> list[Any]:
    """Every entry with a ``_target_`` of a config section (callbacks, loggers); null entries are switched off."""
    if not section:
        return []
    return [hydra.utils.instantiate(item) for item in section.values() if item is not None and "_target_" in item]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then score the best checkpoint on the validation fold; returns the final validation metrics.

    ``ckpt_path=last`` continues the run in ``paths.output_dir`` (see melanoma_lit.runs.files); a finished
    one is left as it is and its metrics returned.
    """
    output_dir = Path(cfg.paths.output_dir)
    if (finished := _already_finished(cfg, output_dir)) is not None:
        return finished
    checkpoint_dir = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    resume_from = resolve_resume(output_dir, checkpoint_dir or output_dir / CHECKPOINT_DIR, cfg.get("ckpt_path"))
    check_resume(cfg, output_dir, resume_from)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    _save_config(cfg, output_dir)

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    log.info("data: %s", datamodule.summary())
    model = build_model(cfg, datamodule)

    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    if resume_from:
        keep_csv_history(loggers, resume_from)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except SIGTERMException:  # SIGTERM, SIGUSR1 or a first Ctrl-C: last.ckpt saved (SignalCheckpoint)
        code = exit_code(callbacks)
        note_interruption(
            f"{signal.Signals(code - 128).name} at epoch {trainer.current_epoch}, step {trainer.global_step}"
        )
        hand_over_signal(callbacks)  # submitit's time-limit handler requeues the job and exits here
        raise SystemExit(code) from None
    except SystemExit as stop:  # submitit ending a job it requeued at the time limit; Lightning after a second Ctrl-C
        note_interruption(f"exit ({stop.code}) at epoch {trainer.current_epoch}, step {trainer.global_step}")
        if isinstance(stop.__context__, KeyboardInterrupt):  # Lightning's exit(1) while handling a Ctrl-C
            raise KeyboardInterrupt from None
        raise

    metrics: dict[str, float] = {}
    if not len(datamodule.splits.val) and cfg.model.temperature != "none":
        log.info(
            "temperature scaling: data.fold=%s leaves no validation fold to fit it on, so T stays 1", cfg.data.fold
        )
    if len(datamodule.splits.val) and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        probs, logits, rows = predict_table(trainer, model, datamodule.val_dataloader(), best or None)
        val = datamodule.splits.val.iloc[rows]
        classes = datamodule.classes
        truth, known = targets(val, classes), known_mask(val, classes)
        calibration = None
        if cfg.model.temperature != "none":
            calibration, probs = calibrate_on_validation(
                cfg.model.temperature, trainer, model, datamodule, best, probs, logits, truth, known
            )
        metrics = compute_metrics(probs, truth, known, classes, challenges=datamodule.spec.challenges)
        metrics = {f"val/{key}": float(value) for key, value in metrics.items()}
        if trainer.is_global_zero:  # under DDP every rank has every prediction; one writes them
            write_predictions(output_dir / VAL_PREDICTIONS, val, probs, classes, fold=datamodule.spec.fold)
            for name in datamodule.spec.challenges:  # what the official scorer reads, to check the logged value
                files = challenge_files(name, val["image_id"], probs, truth, known, classes)
                for kind, frame in zip(("truth", "predictions"), files, strict=True):
                    write_submission(output_dir / CHALLENGE_DIR / f"{name}_{kind}.csv", frame)
            write_metrics(
                output_dir,
                metrics,
                data=datamodule.summary(),
                best_checkpoint=best,
                backbone=cfg.backbone.name,
                fold=datamodule.spec.fold,
                **({"calibration": calibration} if calibration else {}),
            )
        log.info("validation macro AUC %.4f (%s)", metrics.get("val/auc_macro", float("nan")), output_dir)
    return metrics


def cross_validate(cfg: DictConfig) -> dict[str, float]:
    """Train every fold of ``data.fold`` (a list) in turn inside one job, each in ``<run dir>/fold<k>/``.

    Returns the mean over folds of each validation metric, so a search (``hparams_search=optuna``) optimises
    the cross-validated score; ``metrics.json`` adds each fold's values and their standard deviation, and
    ``val_predictions.csv`` holds the out-of-fold predictions of every fold together.
    """
    output_dir = Path(cfg.paths.output_dir)
    if (finished := _already_finished(cfg, output_dir)) is not None:
        return finished
    folds = list(cfg.data.fold)
    fold_dirs = {fold: output_dir / f"fold{fold}" for fold in folds}
    per_fold: dict[int, dict[str, float]] = {}
    for fold, fold_dir in fold_dirs.items():
        fold_cfg = cfg.copy()
        fold_cfg.paths.output_dir = str(fold_dir)
        fold_cfg.data.fold = fold
        log.info("cross-validation: fold %s of %s", fold, folds)
        per_fold[fold] = train(fold_cfg)
    _save_config(cfg, output_dir)
    writes = rank_zero_only.rank == 0  # under DDP every process runs this job; one writes its files
    predictions = [d / VAL_PREDICTIONS for d in fold_dirs.values() if (d / VAL_PREDICTIONS).exists()]
    if predictions and writes:
        with replaced(output_dir / VAL_PREDICTIONS) as partial:
            pd.concat([pd.read_csv(p, dtype={"image": str}) for p in predictions]).to_csv(
                partial, index=False, float_format="%.6f"
            )
    keys = sorted({key for metrics in per_fold.values() for key in metrics})
    table = np.array([[per_fold[fold].get(key, np.nan) for key in keys] for fold in folds], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined in every fold stays NaN
        mean, std = np.nanmean(table, axis=0), np.nanstd(table, axis=0)
    metrics = dict(zip(keys, mean.tolist(), strict=True))
    written = [d / METRICS_FILE for d in fold_dirs.values() if (d / METRICS_FILE).exists()]
    if written and writes:
        first = json.loads(written[0].read_text())
        write_metrics(
            output_dir,
            metrics,
            std=finite(dict(zip(keys, std.tolist(), strict=True))),
            per_fold={str(fold): finite(values) for fold, values in per_fold.items()},
            data=first["data"],
            backbone=cfg.backbone.name,
            fold=folds,
        )
        log.info("cross-validated %s over folds %s: %.4f", cfg.monitor, folds, metrics.get(cfg.monitor, np.nan))
    return metrics


def _position(trainer: pl.Trainer) -> str:
    return f"at epoch {trainer.current_epoch}, step {trainer.global_step}"


def _already_finished(cfg: DictConfig, output_dir: Path) -> dict[str, float] | None:
    """With ``ckpt_path=last``, the metrics of the run that finished in ``output_dir``: it is left as it is."""
    finished = finished_metrics(output_dir) if cfg.get("ckpt_path") == "last" else None
    if finished is not None:
        log.info("%s already finished (%s): nothing to do", output_dir, METRICS_FILE)
    return finished


def _save_config(cfg: DictConfig, output_dir: Path) -> None:
    """This start's resolved config: config.yaml, or config.resume-<n>.yaml beside the first start's."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # DDP runs the job once per process: one records it
        OmegaConf.save(cfg, config_path(output_dir), resolve=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    check_config(cfg, "train")
    check_paths(cfg, ["paths.output_dir"])
    metrics = cross_validate(cfg) if OmegaConf.is_list(cfg.data.fold) else train(cfg)
    return metrics.get(cfg.monitor)


if __name__ == "__main__":
    run(main, "train")
