"""LightningModule: thin glue between the network, the masked loss, the optimiser and the metrics."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.optim import Optimizer

from melanoma_lit.data.metadata import MetadataEncoder
from melanoma_lit.data.transforms import Preprocessing
from melanoma_lit.errors import ConfigError
from melanoma_lit.metrics.isic import LesionMetrics
from melanoma_lit.models.backbone import create_backbone
from melanoma_lit.models.head import LesionHead, LesionNet
from melanoma_lit.models.losses import MaskedBCEWithLogits
from melanoma_lit.models.optim import build_optimizer, build_scheduler
from melanoma_lit.models.tta import tta_probabilities

log = logging.getLogger(__name__)


class LesionClassifier(pl.LightningModule):
    """Takes uint8 NCHW batches and normalises on the device, so loaders ship a quarter of the bytes."""

    def __init__(
        self,
        classes: Sequence[str],
        backbone: dict[str, Any],
        head: dict[str, Any],
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None,
        preprocessing: dict[str, Any],
        monitor: str = "val/auc_macro",
        monitor_mode: str = "max",
        channels_last: bool = True,
        tta: int = 1,
        challenges: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """``metadata``: the MetadataEncoder's settings for a model fusing patient metadata, None for image-only."""
        super().__init__()
        self.save_hyperparameters()
        self.classes = list(classes)
        self.metadata_encoder = MetadataEncoder.from_settings(metadata) if metadata else None
        network = create_backbone(**backbone)
        fused = {"metadata_features": self.metadata_encoder.width} if self.metadata_encoder else {}
        self.net = LesionNet(network, LesionHead(network.num_features, len(self.classes), **head, **fused))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        scale = torch.tensor(255.0)
        self.register_buffer("mean", torch.tensor(preprocessing["mean"]).view(1, 3, 1, 1) * scale, persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing["std"]).view(1, 3, 1, 1) * scale, persistent=False)
        # per-class temperature of the probabilities (models.temperature), fitted after training; 1 = none
        self.register_buffer("temperature", torch.ones(len(self.classes)))
        self.criterion = MaskedBCEWithLogits(**loss)
        self.val_metrics = LesionMetrics(self.classes, challenges=challenges)
        self.tta = tta

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> LesionClassifier:
        """Load for inference or fine-tuning; never downloads weights, the checkpoint holds them."""
        if not Path(path).is_file():
            raise ConfigError(f"checkpoint {path} not found: pass ckpt=<run dir>/checkpoints/best.ckpt")
        try:
            content = torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
            raise ConfigError(
                f"checkpoint {path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:160]}). "
                "The file is truncated (a copy cut short?) or not a checkpoint: copy it again, or pass another "
                "ckpt=<file or run dir>."
            ) from None
        if not isinstance(content, dict) or not isinstance(content.get("hyper_parameters"), dict):
            raise ConfigError(
                f"checkpoint {path}: a PyTorch file but not a melanoma_lit training checkpoint (no hyper_parameters). "
                "Pass a checkpoint written by melanoma_lit.train (<run dir>/checkpoints/best.ckpt) or its run dir."
            )
        hparams = content["hyper_parameters"]
        backbone = {**hparams["backbone"], "pretrained": False, "checkpoint_path": None}
        try:
            return cls.load_from_checkpoint(path, map_location=map_location, backbone=backbone)
        except (RuntimeError, KeyError, TypeError) as error:
            raise ConfigError(
                f"checkpoint {path}: its weights do not fit the model its settings describe "
                f"({type(error).__name__}: {str(error).splitlines()[0][:160]}). Pass a checkpoint written by this "
                "version of melanoma_lit.train."
            ) from None

    @property
    def preprocessing(self) -> Preprocessing:
        values = dict(self.hparams.preprocessing)
        return Preprocessing(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        images = (images.float() - self.mean) / self.std
        return images.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else images

    def forward(self, images: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.normalise(images), metadata)

    def scaled_logits(self, normalised: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Logits divided by the temperature: what every probability the model reports is the sigmoid of."""
        return self.net(normalised, metadata) / self.temperature

    def predict_proba(
        self, images: torch.Tensor, tta: int | None = None, metadata: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sigmoid(logit / T)``; with TTA the mean of that over the views, which share the image's ``metadata``."""
        views = self.tta if tta is None else tta
        return tta_probabilities(lambda view: self.scaled_logits(view, metadata), self.normalise(images), views)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written before temperature scaling has none: T = 1, so it predicts as it always did."""
        checkpoint["state_dict"].setdefault("temperature", torch.ones(len(self.classes)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"], batch.get("metadata"))
        loss = self.criterion(logits, batch["target"], batch["known"])
        # Not on the progress bar: Lightning turns progress-bar values into Python numbers after every batch,
        # a host-device sync per step that stalls the GPU queue; logged values stay tensors until written.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"], batch.get("metadata"))
        loss = self.criterion(logits, batch["target"], batch["known"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(logits), sync_dist=True)
        self.val_metrics.update(torch.sigmoid(logits.float()), batch["target"], batch["known"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        for key, value in values.items():
            name = f"val/{key}"
            # already over every rank's predictions (LesionMetrics syncs under DDP): sync_dist only says so
            self.log(
                name, torch.as_tensor(value, dtype=torch.float32), prog_bar=name == self.hparams.monitor, sync_dist=True
            )

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Probabilities as ``predict_proba`` gives them, and the identity view's logits before the temperature
        (what the temperature is fitted on); without TTA one forward pass gives both."""
        metadata = batch.get("metadata")
        logits = self(batch["image"], metadata)
        with_tta = self.tta > 1
        probs = (
            self.predict_proba(batch["image"], metadata=metadata)
            if with_tta
            else torch.sigmoid(logits / self.temperature)
        )
        return {"probs": probs.float(), "logits": logits.float(), "index": batch["index"]}

    def create_optimizer(self) -> Optimizer:
        """The configured optimiser over the net's parameter groups (the bench times it without Lightning)."""
        return build_optimizer(self.net, **self.hparams.optimizer)

    def configure_optimizers(self) -> Any:
        optimizer = self.create_optimizer()
        schedule = dict(self.hparams.scheduler or {})
        name = schedule.pop("name", None)
        if name in (None, "none"):
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs))
        warmup_epochs = schedule.pop("warmup_epochs", 0)
        warmup_steps = int(warmup_epochs * steps_per_epoch)
        if warmup_steps >= total_steps:  # a short run (debug presets, max_epochs=1) of a recipe with a warm-up
            log.warning(
                "scheduler.warmup_epochs=%s covers the whole run (%d steps): warming up over its first half instead",
                warmup_epochs,
                total_steps,
            )
            warmup_steps = total_steps // 2
        scheduler = build_scheduler(
            optimizer,
            name,
            monitor=self.hparams.monitor,
            monitor_mode=self.hparams.monitor_mode,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            **schedule,
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
