"""Training that survives kills and pre-emption: a checkpoint on SIGTERM/SIGUSR1, exact resumption.

A resumed run continues as the uninterrupted one would have: checkpoints carry the RNG states
(ResumeState), and the per-epoch CSV history of the interrupted part is kept (keep_csv_history).
"""

from __future__ import annotations

import csv
import logging
import os
import random
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class SignalCheckpoint(Callback):
    """On SIGTERM, SIGUSR1 (the usual pre-emption warnings of SLURM and other schedulers) or Ctrl-C: finish the
    current batch, write ``<dirpath>/<filename>.ckpt`` and stop; ``exit_code`` is then 128 + the signal.

    Lightning itself turns SIGTERM into a stop after the batch; this callback adds SIGUSR1 (unless SLURM
    auto-requeue already handles it) and the checkpoint, named like ModelCheckpoint's last one so that
    ``ckpt_path=last`` resumes from whichever is newer.

    SIGUSR2 held by a handler (submitit's, at a SLURM job's time limit: it requeues the job and calls ``sys.exit``)
    is taken over the same way and handed to that handler by ``hand_over`` once the checkpoint is written: run
    where the signal lands, its exit could come in the middle of an optimizer step, and the checkpoint written
    on the way out would hold a half-trained batch that the resumed run trains again.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.received: int | None = None
        self._previous: Any = None
        self._previous_int: Any = None
        self._deferred: Any = None  # the SIGUSR2 handler taken over, run by hand_over

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process the signal ended, so schedulers see a pre-empted job."""
        return 128 + (self.received or signal.SIGTERM)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = self._deferred = None
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # not SLURM auto-requeue's (Lightning)
            self._previous = signal.signal(signal.SIGUSR1, self._stop)
        # Ctrl-C as a pre-emption: finish the batch, save, exit 130; a second Ctrl-C stops at once
        self._previous_int = signal.signal(signal.SIGINT, self._stop)
        if callable(signal.getsignal(signal.SIGUSR2)):
            self._deferred = signal.signal(signal.SIGUSR2, self._stop)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: saving a checkpoint after this batch (Ctrl-C again to stop without one)")
            signal.signal(signal.SIGINT, signal.default_int_handler)
        lightning_sigterm = signal.getsignal(signal.SIGTERM)  # Lightning's: stop after this batch
        if callable(lightning_sigterm):
            lightning_sigterm(signal.SIGTERM, frame)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
        if not isinstance(exception, SIGTERMException):
            # raised wherever it landed (a second Ctrl-C, an exit from a signal handler): maybe inside an optimizer
            # step, so no checkpoint; the run resumes from the last one written at a batch's end
            return
        if self.received is None:
            self.received = signal.SIGTERM
        # ModelCheckpoint's next last.ckpt, after the resume, then replaces this one instead of going beside it
        # as last-v1.ckpt
        folder = str(self.path.parent)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath == folder:
                callback.last_model_path = str(self.path)
        trainer.save_checkpoint(self.path)
        log.warning(
            "%s: saved %s at epoch %d, step %d. Resume with ckpt_path=last hydra.run.dir=%s",
            signal.Signals(self.received).name,
            self.path,
            trainer.current_epoch,
            trainer.global_step,
            trainer.default_root_dir,
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handler()

    def hand_over(self) -> None:
        """Runs the SIGUSR2 handler this callback took the signal from, after the stop it caused (submitit requeues
        the job and exits here)."""
        if self.received == signal.SIGUSR2 and self._deferred is not None:
            self._deferred(signal.SIGUSR2, None)

    def _restore_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in (
            (signal.SIGUSR1, self._previous),
            (signal.SIGINT, self._previous_int),
            (signal.SIGUSR2, self._deferred),
        ):
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = self._previous_int = None


class EpochCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes ``last.ckpt`` (``save_last``) at every epoch end, as its documentation says.

    Lightning 2.6 writes it only when a best (top-k) checkpoint was written in the same step, so after an epoch that
    does not improve the monitor ``last.ckpt`` stays behind and a restart repeats more than the interrupted epoch.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: pl.Trainer) -> None:
        # a checkpoint written at this step (best and last) makes the skip true: nothing is written twice
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ResumeState(Callback):
    """What a checkpoint needs beyond Lightning's own for a resumed run to continue exactly as the
    uninterrupted one, also from the middle of an epoch: the torch, CUDA, numpy and python RNG states (dropout;
    the training order and augmentations depend on the seed and epoch only, see melanoma_lit.data.sampling), the
    position in the epoch, the epoch-end learning-rate step Lightning skips when it restarts from an end-of-epoch
    checkpoint, and loggers flushed every epoch so that their history on disk reaches the last checkpoint
    (Lightning logs an epoch's training loss just after that epoch's checkpoint, so a kill in the instant before
    the next epoch starts loses that one row, never the checkpoint).

    The RNG states are put back when training starts, after Lightning has made the training loader's iterator
    (which draws from torch's RNG), so the next draw is the one the uninterrupted run made next.
    """

    def __init__(self) -> None:
        self._pending_epoch_step: dict[str, float] | None = None
        self._rng: dict[str, Any] | None = None
        self._resumed_mid_epoch = False
        self._partial_epoch: dict[str, list[float]] | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        checkpoint["resume_state"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": [name, keys.tolist(), position, has_gauss, gauss],
            "python": random.getstate(),
            "metrics": {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1},
            "partial_epoch": _epoch_sums(trainer),
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        state = checkpoint.get("resume_state")
        if state is None:
            return
        self._rng = state
        loops = checkpoint["loops"]["fit_loop"]
        epochs = loops["epoch_progress"]["current"]
        if epochs["started"] > epochs["processed"]:  # stopped inside epoch `processed`, after `completed` batches
            resume_at = getattr(trainer.datamodule, "resume_at", None)
            if callable(resume_at):
                resume_at(epochs["processed"], loops["epoch_loop.batch_progress"]["current"]["completed"])
            self._resumed_mid_epoch = True
            self._partial_epoch = state.get("partial_epoch")
        # saved by ModelCheckpoint inside the epoch's end, before the epoch-interval schedulers stepped
        self._pending_epoch_step = state["metrics"] if epochs["processed"] > epochs["completed"] else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._rng = self._rng, None
        if state is not None:
            torch.set_rng_state(state["torch"])
            cuda = state["cuda"]
            if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            name, keys, position, has_gauss, gauss = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
            random.setstate(tuple(tuple(part) if isinstance(part, list) else part for part in state["python"]))
        metrics, self._pending_epoch_step = self._pending_epoch_step, None
        if metrics is not None:
            _step_epoch_schedulers(trainer, metrics)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics, self._pending_epoch_step = self._pending_epoch_step, None
        if metrics is not None:  # the step the epoch a run restarted in did not get (on_train_epoch_end)
            _step_epoch_schedulers(trainer, metrics)
        for logger in trainer.loggers:
            logger.save()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # the epoch means of the stopped epoch (train/loss_epoch) take in the batches trained before the stop
        sums, self._partial_epoch = self._partial_epoch, None
        if sums:
            _add_epoch_sums(trainer, sums)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning does not step the epoch-interval schedulers at the end of the epoch it restarted in. The step
        # waits for the next epoch's start, as Lightning's own comes after the epoch's checkpoint: a checkpoint
        # written now (ModelCheckpoint runs after this) must not hold it, or resuming from it would step twice.
        if self._resumed_mid_epoch:
            self._resumed_mid_epoch = False
            self._pending_epoch_step = {
                key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1
            }


def _training_results(trainer: pl.Trainer) -> dict[str, Any]:
    """Lightning's running epoch aggregates of what training_step logs (``on_epoch=True``): a private attribute,
    so where a Lightning version lacks it the stopped epoch's means cover the batches after the restart only."""
    results = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_results", None)
    return dict(results) if isinstance(results, dict) else {}


def _epoch_sums(trainer: pl.Trainer) -> dict[str, list[float]]:
    """{key: [weighted sum, batch size so far]} of the epoch means being accumulated."""
    sums = {}
    for key, item in _training_results(trainer).items():
        meta = getattr(item, "meta", None)
        if getattr(item, "is_tensor", False) and meta is not None and meta.on_epoch and meta.is_mean_reduction:
            sums[key] = [float(item.value), float(item.cumulated_batch_size)]
    return sums


def _add_epoch_sums(trainer: pl.Trainer, sums: dict[str, list[float]]) -> None:
    for key, item in _training_results(trainer).items():
        if key in sums and hasattr(item, "cumulated_batch_size"):
            value, count = sums[key]
            item.value = item.value + torch.tensor(value, dtype=item.value.dtype, device=item.value.device)
            item.cumulated_batch_size = item.cumulated_batch_size + int(count)


def _step_epoch_schedulers(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """The epoch-end step of every epoch-interval scheduler, as Lightning makes it (plateau ones on ``monitor``)."""
    for config in trainer.lr_scheduler_configs:
        if config.interval != "epoch":
            continue
        if not config.reduce_on_plateau:
            config.scheduler.step()
        elif config.monitor in metrics:
            config.scheduler.step(metrics[config.monitor])


def _signal_checkpoints(callbacks: Sequence[Callback]) -> list[SignalCheckpoint]:
    return [callback for callback in callbacks if isinstance(callback, SignalCheckpoint)]


def exit_code(callbacks: Sequence[Callback]) -> int:
    """The exit status of a run a signal stopped (128 + signal, as a shell reports a killed process)."""
    stops = _signal_checkpoints(callbacks)
    return stops[0].exit_code if stops else 128 + signal.SIGTERM


def hand_over_signal(callbacks: Sequence[Callback]) -> None:
    """After a signal stop: the handler SignalCheckpoint took the signal from, if any (SignalCheckpoint.hand_over)."""
    for stop in _signal_checkpoints(callbacks):
        stop.hand_over()


@rank_zero_only  # the one process whose loggers write (under DDP the others would race for the file)
def keep_csv_history(loggers: Sequence[Logger], checkpoint: str | Path) -> None:
    """Carry the rows the interrupted run logged up to ``checkpoint`` into a resumed run's CSV loggers,
    which would otherwise start their metrics.csv afresh.

    Lightning's CSV writer deletes metrics.csv when it starts, so the old file is first moved aside to
    ``metrics.csv.before-resume`` and removed only once its rows are written again: a kill in between
    leaves it for the next resume to read.
    """
    step = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["global_step"]
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        aside = path.with_name(path.name + ".before-resume")
        if not aside.exists():
            if not path.exists():
                continue
            os.replace(path, aside)
        with aside.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("step") and int(float(row["step"])) < step]
        writer = logger.experiment
        for row in rows:
            values = {key: _number(value) for key, value in row.items() if key != "step" and value not in ("", None)}
            writer.log_metrics(values, step=int(float(row["step"])))
        logger.save()
        aside.unlink()


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)
