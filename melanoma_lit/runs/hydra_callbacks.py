"""Hydra callbacks of a run folder: the guard against overwriting a run, each job's outcome on disk, one GPU per
parallel sweep job.

Imported by Hydra in every run (conf/hydra/default.yaml lists ``RunDirGuard`` and ``SweepRecorder``), so it stays
light: no torch at import time. ``hydra/launcher=gpus`` adds ``DeviceSlots`` and sizes the joblib pool with the
``melanoma_lit.device_slots`` resolver registered here (Hydra instantiates callbacks before the launcher).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from filelock import FileLock
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from melanoma_lit.cli import friendly_errors, on_friendly_exit
from melanoma_lit.data.locks import hold
from melanoma_lit.runs.checks import check_config, check_writable_folder
from melanoma_lit.runs.files import (
    JOB_RECORD,
    METRICS_FILE,
    SLOT_ENV,
    check_run_dir,
    first_free,
    job_record,
    with_earlier_attempts,
    write_json,
)

log = logging.getLogger(__name__)

SLOTS_DIR = ".device_slots"
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")

# lock folder -> (slot, open lock file); held for the life of the process, released by the OS when it exits
_claimed: dict[Path, tuple[int, IO[str]]] = {}


def visible_devices() -> list[str]:
    """GPUs a sweep may use: ``CUDA_VISIBLE_DEVICES`` when set (empty hides every GPU), else every GPU torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device.strip() for device in listed.split(",") if device.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def device_slot_count() -> int:
    """Parallel jobs for ``hydra/launcher=gpus``: one per visible GPU, one without GPUs."""
    return max(1, len(visible_devices()))


def claim_slot(lock_dir: str | Path, n_slots: int, poll_s: float = 0.5) -> int:
    """A slot in ``range(n_slots)`` no other live process holds, kept until this process exits.

    Held per process, not per job: a worker that has initialised CUDA cannot switch GPUs, so it keeps its slot for
    every job it runs. With as many workers as slots nobody waits; a surplus worker waits until a slot frees.
    """
    lock_dir = Path(lock_dir).resolve()
    if lock_dir in _claimed:
        return _claimed[lock_dir][0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting_logged = False
    while True:
        for slot in range(n_slots):
            handle = (lock_dir / f"slot-{slot}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _claimed[lock_dir] = (slot, handle)
            return slot
        if not waiting_logged:
            log.info("all %d device slots in %s are taken; waiting for one to free", n_slots, lock_dir)
            waiting_logged = True
        time.sleep(poll_s)


class DeviceSlots(Callback):
    """Pins each parallel sweep job to one GPU (``hydra/launcher=gpus``): its process sees only that GPU."""

    def __init__(self) -> None:
        self.devices = visible_devices()  # read in the launching process; the workers receive this list

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        slot = claim_slot(Path(config.hydra.sweep.dir) / SLOTS_DIR, max(1, len(self.devices)))
        os.environ[SLOT_ENV] = str(slot)
        if self.devices:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.devices[slot]
        log.info("device slot %d: CUDA_VISIBLE_DEVICES=%s", slot, os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"))


class SweepRecorder(Callback):
    """Writes ``job.json`` (status, times, device, SLURM job, error) into every job folder, run or sweep, for the
    report: ``running`` when the job starts, its outcome when it ends, earlier starts under ``attempts``."""

    def __init__(self) -> None:
        self._started: float | None = None
        self._forget_exit_hook: Callable[[], None] | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()
        if not _is_rank_zero():
            _own_log_file(int(os.environ.get("SLURM_PROCID", 0)))
            return
        # "running" from the start, so a job cut off (killed, requeued) is told from one never started. A single
        # run's user error or Ctrl-C exits (friendly_errors) before Hydra's job end: the hook records it.
        self._write(config, job_record(config, None, self._started, None))
        if config.hydra.mode != RunMode.MULTIRUN:
            self._forget_exit_hook = on_friendly_exit(functools.partial(self._ended_by_error, config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self._forget_hook()
        if _is_rank_zero():
            self._write(config, job_record(config, job_return, self._started, time.time()))

    def _ended_by_error(self, config: DictConfig, code: int, message: str) -> None:
        self._forget_hook()
        record = job_record(config, None, self._started, time.time())
        self._write(config, {**record, "status": "interrupted" if code == 130 else "failed", "error": message})

    def _forget_hook(self) -> None:
        if self._forget_exit_hook is not None:
            self._forget_exit_hook()
            self._forget_exit_hook = None

    def _write(self, config: DictConfig, record: dict[str, Any]) -> None:
        path = Path(config.hydra.runtime.output_dir) / JOB_RECORD
        write_json(path, with_earlier_attempts(record, path))


def note_interruption(reason: str) -> None:
    """Marks this job's ``running`` record ``interrupted`` and says why (a signal, the scheduler's exit): the process
    leaves by a SystemExit that passes Hydra's job end by; the job's next start files the record under
    ``attempts``. Nothing outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not _is_rank_zero():
        return
    output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)  # unset when composed
    if output_dir is None:
        return
    path = Path(output_dir) / JOB_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if record.get("status") == "running" and record.get("pid") == os.getpid():
        ended = datetime.now(timezone.utc).isoformat()
        write_json(path, {**record, "status": "interrupted", "ended": ended, "reason": reason})


def _own_log_file(rank: int) -> None:
    """A DDP rank SLURM started (one task each) runs the same Hydra job in the same folder as rank 0: it logs to
    ``<job>.rank<k>.log`` beside rank 0's ``<job>.log`` instead of into it."""
    if rank == 0:
        return
    root = logging.getLogger()
    for shared in [handler for handler in root.handlers if isinstance(handler, logging.FileHandler)]:
        path = Path(shared.baseFilename)
        own = logging.FileHandler(path.with_name(f"{path.stem}.rank{rank}{path.suffix}"), encoding=shared.encoding)
        own.setLevel(shared.level)
        own.setFormatter(shared.formatter)
        root.removeHandler(shared)
        shared.close()
        root.addHandler(own)


def _is_rank_zero() -> bool:
    """DDP ranks other than 0 rerun the Hydra job in the same folder; only rank 0 records it."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


RUN_LOCK = ".run.lock"  # in a run folder while a command runs in it (and its .owner.json: who)
_held: dict[Path, FileLock] = {}  # run folder -> its lock, held by this process


def hold_run_dir(run_dir: Path) -> None:
    """One command per run folder: hold its lock until the command ends (released by the OS if it dies);
    ConfigError naming the other command (PID, host) when one holds it. DDP ranks other than 0 rerun the job
    in rank 0's folder, which holds the lock for them."""
    run_dir = run_dir.resolve()
    if run_dir in _held or not _is_rank_zero():
        return
    _held[run_dir] = hold(run_dir / RUN_LOCK, f"run folder {run_dir}")


def release_run_dir(run_dir: Path) -> None:
    lock = _held.pop(run_dir.resolve(), None)
    if lock is not None:
        lock.release()


class RunDirGuard(Callback):
    """Hydra callback, before Hydra writes into the run folder: check_run_dir, then keep the Hydra files of
    an earlier start (a resumed start writes its own into ``.hydra/resume-<n>/``, a finished run gets none)."""

    @friendly_errors
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        ckpt_path = config.get("ckpt_path")
        check_run_dir(run_dir, ckpt_path)  # a refused folder is left exactly as it was: no lock file either
        check_config(config, str(config.hydra.job.config_name))  # every knob, before Hydra makes the run folder
        check_writable_folder(run_dir, "hydra.run.dir")
        hold_run_dir(run_dir)
        check_run_dir(run_dir, ckpt_path)  # again, now that no other command can write there
        subdir = config.hydra.output_subdir
        if subdir is None or not (run_dir / subdir).exists():
            return
        with read_write(config.hydra), open_dict(config.hydra):
            if ckpt_path == "last" and (run_dir / METRICS_FILE).exists():
                config.hydra.output_subdir = None  # training returns at once: nothing new to record
            else:
                config.hydra.output_subdir = str(first_free(run_dir / subdir / "resume-{n}").relative_to(run_dir))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_dir(Path(config.hydra.run.dir))

    @friendly_errors
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # a sweep job's folder (a requeued job may meet its first start)
            hold_run_dir(Path(config.hydra.runtime.output_dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            release_run_dir(Path(config.hydra.runtime.output_dir))
