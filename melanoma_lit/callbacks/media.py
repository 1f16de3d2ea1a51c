"""Validation media for experiment trackers: ROC/PR curves, confusion matrix, reliability diagram, worst-errors
table, Grad-CAM.

Scalars (per-class AUC and the rest) are logged by the module; this callback adds what needs the whole
validation epoch's predictions. It reads them from the module's ``val_metrics`` states before the module
computes and resets them (callback hooks run before the module's), plus the row indices of each batch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from torchmetrics.utilities import dim_zero_cat

from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.dataset import LesionDataset
from melanoma_lit.errors import MelanomaLitError
from melanoma_lit.inference.gradcam import explain, overlay
from melanoma_lit.metrics.isic import confusion_matrix
from melanoma_lit.metrics.plots import plot_confusion_matrix, plot_pr_curves, plot_reliability, plot_roc_curves

_EPS = 1e-7


@dataclass(frozen=True)
class ValidationOutputs:
    """One validation epoch: probabilities, targets and known mask ``[N, K]`` and dataset row indices ``[N]``."""

    epoch: int
    index: np.ndarray
    probs: np.ndarray
    targets: np.ndarray
    known: np.ndarray


class ValidationMedia(pl.Callback):
    """Logs validation media to every W&B and MLflow logger attached, and the plots to TensorBoard; does nothing
    without one of them.

    ``every_n_epochs=0`` logs once, for the last validation epoch, when training ends (cheapest); ``n > 0``
    also logs every n-th epoch. ``table_rows`` worst-predicted images go into the table (W&B: with
    thumbnails), the first ``gradcam`` of them get Grad-CAM overlays for their predicted class.
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        table_rows: int = 32,
        gradcam: int = 4,
        thumbnail: int = 128,
        method: str = "gradcam",
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.table_rows = table_rows
        self.gradcam = gradcam
        self.thumbnail = thumbnail
        self.method = method
        self._indices: list[torch.Tensor] = []
        self._last: ValidationOutputs | None = None
        self._dataset: LesionDataset | None = None
        self._logged_epoch: int | None = None

    @staticmethod
    def trackers(trainer: pl.Trainer) -> list[WandbLogger | MLFlowLogger | TensorBoardLogger]:
        kinds = WandbLogger | MLFlowLogger | TensorBoardLogger
        return [logger for logger in trainer.loggers if isinstance(logger, kinds)]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._indices = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: object,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.trackers(trainer) and not trainer.sanity_checking:
            self._indices.append(batch["index"].detach())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._indices or trainer.sanity_checking:
            return
        self._last = self._gather(trainer, pl_module)
        self._dataset = trainer.val_dataloaders.dataset
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last is not None and self._logged_epoch != self._last.epoch:
            self._log(trainer, pl_module)

    def _gather(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ValidationOutputs:
        metric = pl_module.val_metrics
        if len(metric.probs) != len(self._indices):
            raise MelanomaLitError(
                f"ValidationMedia saw {len(self._indices)} validation batches but val_metrics holds "
                f"{len(metric.probs)}: the module must update val_metrics once per validation batch."
            )
        parts = [
            torch.cat(self._indices),
            *(dim_zero_cat(state) for state in (metric.probs, metric.targets, metric.known)),
        ]
        if trainer.world_size > 1:
            parts = [trainer.strategy.all_gather(part).flatten(0, 1) for part in parts]
        index, probs, targets, known = (part.cpu().numpy() for part in parts)
        index, first = np.unique(index, return_index=True)  # a distributed sampler pads with repeats
        return ValidationOutputs(trainer.current_epoch, index, probs[first], targets[first], known[first])

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._logged_epoch = self._last.epoch
        if not trainer.is_global_zero:
            return
        outputs, classes = self._last, list(pl_module.classes)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            plots = {
                "roc_curves": plot_roc_curves(
                    outputs.probs, outputs.targets, outputs.known, classes, folder / "roc.png"
                ),
                "pr_curves": plot_pr_curves(outputs.probs, outputs.targets, outputs.known, classes, folder / "pr.png"),
                "confusion_matrix": plot_confusion_matrix(
                    confusion_matrix(outputs.probs, outputs.targets, outputs.known), classes, folder / "confusion.png"
                ),
                "reliability": plot_reliability(
                    outputs.probs, outputs.targets, outputs.known, classes, folder / "reliability.png"
                ),
            }
            table = worst_errors(outputs, classes, self._dataset.image_ids).head(self.table_rows)
            images = [self._dataset[int(row)]["image"] for row in table["row"]]
            overlays = self._gradcam(pl_module, images[: self.gradcam], table, folder)
            for logger in self.trackers(trainer):
                if isinstance(logger, WandbLogger):
                    self._to_wandb(logger, trainer.global_step, plots, table, images, overlays)
                elif isinstance(logger, TensorBoardLogger):
                    self._to_tensorboard(logger, trainer.global_step, plots)
                else:
                    self._to_mlflow(logger, outputs.epoch, plots, table, overlays, folder)

    def _gradcam(
        self, pl_module: pl.LightningModule, images: Sequence[torch.Tensor], table: pd.DataFrame, folder: Path
    ) -> list[tuple[Path, str]]:
        if not images:
            return []
        batch = torch.stack(list(images))
        result = explain(pl_module, batch, table["predicted_index"].head(len(images)).tolist(), self.method)
        pictures = batch.permute(0, 2, 3, 1).numpy()
        overlays = []
        for (_, row), picture, cam in zip(table.head(len(images)).iterrows(), pictures, result.cams, strict=True):
            path = folder / f"gradcam_{row['image_id']}_{row['predicted']}.png"
            with replaced(path) as partial:
                Image.fromarray(overlay(picture, cam)).save(partial, format="PNG")
            caption = (
                f"{row['image_id']}: true {row['true']}, predicted {row['predicted']} ({row[row['predicted']]:.2f})"
            )
            overlays.append((path, caption))
        return overlays

    def _to_wandb(
        self,
        logger: WandbLogger,
        step: int,
        plots: dict[str, Path],
        table: pd.DataFrame,
        images: Sequence[torch.Tensor],
        overlays: list[tuple[Path, str]],
    ) -> None:
        import wandb

        columns = [column for column in table.columns if column not in ("row", "predicted_index")]
        rows = [
            [wandb.Image(self._thumbnail(image)), *record]
            for image, record in zip(images, table[columns].itertuples(index=False), strict=True)
        ]
        media: dict[str, object] = {f"val/{name}": wandb.Image(str(path)) for name, path in plots.items()}
        media["val/samples"] = wandb.Table(columns=["thumbnail", *columns], data=rows)
        if overlays:
            media["val/gradcam"] = [wandb.Image(str(path), caption=caption) for path, caption in overlays]
        logger.log_metrics(media, step=step)

    @staticmethod
    def _to_mlflow(
        logger: MLFlowLogger,
        epoch: int,
        plots: dict[str, Path],
        table: pd.DataFrame,
        overlays: list[tuple[Path, str]],
        folder: Path,
    ) -> None:
        where = f"media/epoch_{epoch:03d}"
        samples = folder / "val_samples.csv"
        with replaced(samples) as partial:
            table.drop(columns=["row", "predicted_index"]).to_csv(partial, index=False, float_format="%.6f")
        for path in [*plots.values(), samples]:
            logger.experiment.log_artifact(logger.run_id, str(path), where)
        for path, _ in overlays:
            logger.experiment.log_artifact(logger.run_id, str(path), f"{where}/gradcam")

    @staticmethod
    def _to_tensorboard(logger: TensorBoardLogger, step: int, plots: dict[str, Path]) -> None:
        for name, path in plots.items():
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("RGB"))
            logger.experiment.add_image(f"val/{name}", pixels, global_step=step, dataformats="HWC")

    def _thumbnail(self, image: torch.Tensor) -> Image.Image:
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        picture.thumbnail((self.thumbnail, self.thumbnail))
        return picture


def worst_errors(outputs: ValidationOutputs, classes: Sequence[str], image_ids: Sequence[str]) -> pd.DataFrame:
    """One row per image, the largest loss first: masked mean binary cross-entropy over its known labels.

    Columns: ``row`` (dataset index), ``image_id``, ``true`` (known positive labels), ``predicted`` (top class),
    ``predicted_index``, ``loss``, then one probability column per class. Images with no known label come last.
    """
    p = np.clip(outputs.probs, _EPS, 1 - _EPS)
    t, k = outputs.targets > 0.5, outputs.known > 0.5
    bce = -(t * np.log(p) + ~t * np.log(1 - p))
    counts = k.sum(axis=1)
    loss = np.divide((bce * k).sum(axis=1), counts, out=np.full(len(p), np.nan), where=counts > 0)
    names = np.asarray(classes)
    frame = pd.DataFrame(
        {
            "row": outputs.index,
            "image_id": np.asarray(image_ids)[outputs.index],
            "true": [", ".join(names[row]) or "-" for row in t & k],
            "predicted": names[outputs.probs.argmax(axis=1)],
            "predicted_index": outputs.probs.argmax(axis=1),
            "loss": loss,
        }
    )
    frame[list(classes)] = outputs.probs
    return frame.sort_values("loss", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
