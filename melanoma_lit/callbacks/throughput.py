"""Images per second of a Lightning stage, timed between device synchronisations: what bench measures with."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_lightning as pl
import torch

from melanoma_lit.errors import DataError


@dataclass
class Throughput:
    """Images through one stage inside its timed window."""

    images: int
    seconds: float
    steps: int | None = None
    peak_gpu_memory_mib: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work; a no-op on the CPU, which runs synchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Window:
    """Counts the images of the ``steps`` batches that follow ``warmup`` untimed ones.

    The clock starts as the last warm-up batch ends and stops as the last timed one ends, each time after a
    device synchronisation: so the window holds exactly ``steps`` batch periods (data wait included).
    """

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.batches = 0
        self.images = 0
        self.seconds: float | None = None
        self._opened = 0.0

    @property
    def closed(self) -> bool:
        return self.seconds is not None

    def tick(self, images: int) -> bool:
        """One batch of ``images`` has finished; True once the window is closed."""
        self.batches += 1
        if self.batches == self.warmup:
            synchronize(self.device)
            self._opened = time.perf_counter()
        elif self.warmup < self.batches <= self.warmup + self.steps:
            self.images += images
            if self.batches == self.warmup + self.steps:
                synchronize(self.device)
                self.seconds = time.perf_counter() - self._opened
        return self.closed

    def result(self, peak_gpu_memory_mib: float | None = None) -> Throughput:
        if self.seconds is None:
            raise DataError(
                f"only {self.batches} of {self.warmup} warm-up + {self.steps} timed batches ran: "
                "lower bench.warmup_steps or bench.steps, or use a larger data set."
            )
        return Throughput(self.images, self.seconds, self.steps, peak_gpu_memory_mib)


class ThroughputTimer(pl.Callback):
    """A :class:`Window` over the batches of one Lightning stage (fit, validate or predict)."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.window: Window | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.window = Window(self.warmup, self.steps, trainer.strategy.root_device)

    def _tick(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *_: int) -> None:
        self.window.tick(len(batch["image"]))  # a shape, not a value: no device sync

    on_train_batch_end = on_validation_batch_end = on_predict_batch_end = _tick


ELAPSED_SECONDS = "time/elapsed_seconds"  # the logged key: wall clock, so it is the one metric a resume cannot repeat


class ElapsedTime(pl.Callback):
    """Logs the training wall time so far at each validation epoch end: metric-vs-time (time-to-accuracy) curves
    from any run's logs. A resumed run adds the time its checkpoint had already spent."""

    def __init__(self) -> None:
        self._spent_before = 0.0
        self._started: float | None = None

    def _seconds(self) -> float:
        return self._spent_before + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            pl_module.log(ELAPSED_SECONDS, self._seconds(), on_epoch=True)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_seconds": self._seconds()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._spent_before = state_dict["elapsed_seconds"]
