"""LightningDataModule: thin glue from a DataSpec to loaders of uint8 image batches."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from melanoma_lit.data.balance import positive_weights, sample_weights
from melanoma_lit.data.build import DataSpec, DataSplits, build_splits, prepare_sources
from melanoma_lit.data.cache import use_cache
from melanoma_lit.data.dataset import LesionDataset
from melanoma_lit.data.device_augment import photometric_augment
from melanoma_lit.data.metadata import MetadataEncoder, check_columns
from melanoma_lit.data.sampling import EpochSampler
from melanoma_lit.data.transforms import Augmentation, Preprocessing, eval_transform, train_transform


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class LesionDataModule(pl.LightningDataModule):
    def __init__(
        self,
        spec: DataSpec,
        preprocessing: Preprocessing,
        augmentation: Augmentation,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        balanced_sampler: bool = False,
        metadata: Sequence[str] = (),
    ) -> None:
        """``metadata``: patient metadata columns (table.META_COLUMNS) the batches carry, encoded with the training
        fold's statistics (``metadata_encoder``, set up with the splits); none for an image-only model."""
        super().__init__()
        self.spec = spec
        self.preprocessing = preprocessing
        self.augmentation = augmentation
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.balanced_sampler = balanced_sampler
        self.metadata = check_columns(metadata)
        self.metadata_encoder: MetadataEncoder | None = None
        self.splits: DataSplits | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained in it)

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    def prepare_data(self) -> None:
        prepare_sources(self.spec)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self._read_from_cache(build_splits(self.spec))
            if self.metadata:
                self.metadata_encoder = MetadataEncoder.fit(self.metadata, self.splits.train)

    def _read_from_cache(self, splits: DataSplits) -> DataSplits:
        """Point rows at the resize cache (python -m melanoma_lit.prepare) where it holds them."""
        side = self.preprocessing.decode_side
        parts = {name: use_cache(getattr(splits, name), self.spec.cache_dir, side) for name in ("train", "val", "test")}
        summary = {**splits.summary, "read_from_cache": sum(count for _, count in parts.values())}
        return DataSplits(*(table for table, _ in parts.values()), summary=summary)

    def summary(self) -> dict[str, Any]:
        self.setup()
        return self.splits.summary

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Training batches carry their photometric parameters: kept on the host (a numpy array is not moved), so
        that applying them never reads the device."""
        if "photometric" in batch:
            batch["photometric"] = batch["photometric"].numpy()
        return batch

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Training's photometric augmentation, on the device, batch-wise (data.device_augment)."""
        if "photometric" in batch:
            batch["image"] = photometric_augment(batch["image"], batch.pop("photometric"))
        return batch

    def positive_weights(self) -> np.ndarray:
        self.setup()
        return positive_weights(self.splits.train, self.classes)

    def _dataset(self, table, train: bool) -> LesionDataset:
        transform = (
            train_transform(self.preprocessing, self.augmentation) if train else eval_transform(self.preprocessing)
        )
        return LesionDataset(
            table, self.classes, transform, decode_side=self.preprocessing.decode_side, metadata=self.metadata_encoder
        )

    def _loader(self, dataset: LesionDataset, batch_size: int, **kwargs: Any) -> DataLoader:
        # The loader's own generator seeds its workers, so making an iterator draws nothing from torch's global RNG
        # (which dropout draws from): a resumed run makes its iterators at other moments than the stopped one did.
        generator = torch.Generator()
        generator.manual_seed(_seed())
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=generator,
            worker_init_fn=_init_worker,
            **kwargs,
        )

    def resume_at(self, epoch: int, batches: int) -> None:
        """Training continues a run stopped after ``batches`` batches of ``epoch``: the next training loader starts
        that epoch with the batch the stopped run would have trained next (melanoma_lit.callbacks.resilience)."""
        self._resume = (epoch, batches)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or, with ``balanced_sampler``, class-balanced) batches in an order fixed by the seed and the
        epoch (data.sampling.EpochSampler; under DDP each rank its share)."""
        self.setup()
        dataset = self._dataset(self.splits.train, train=True)
        weights = sample_weights(self.splits.train, self.classes) if self.balanced_sampler else None
        sampler = EpochSampler(len(dataset), seed=_seed(), weights=weights)
        if self._resume is not None:
            epoch, batches = self._resume
            sampler.resume(epoch, batches * self.batch_size)
        drop_last = self.balanced_sampler or len(dataset) > self.batch_size
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._dataset(self.splits.val, train=False), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._dataset(self.splits.test, train=False), self.eval_batch_size)


def _init_worker(worker_id: int) -> None:
    """Leaves a scheduler's warnings to the main process: SLURM sends SIGUSR1/SIGUSR2 to every process of a job
    step, and a worker would run the handler it inherited (submitit's requeue-and-exit, Lightning's SLURM requeue)
    and die in the middle of a batch, while the main process stops at the batch's end and ends its workers itself.
    Then seeds as Lightning's own worker_init_fn would have (seed_everything(workers=True))."""
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)


def _seed() -> int:
    """The seed seed_everything set (train: the config's ``seed``), read as Lightning's own samplers read it."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
