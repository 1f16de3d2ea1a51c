"""Hydra callbacks for sweeps: each job's outcome on disk, one GPU per parallel job, the report when a sweep ends.

Imported by Hydra in every run (conf/hydra/default.yaml lists ``SweepRecorder``), so it stays light: no torch
at import time. ``hydra/launcher=gpus`` adds ``DeviceSlots`` and sizes the joblib pool with the
``melanoma_lit.device_slots`` resolver registered here (Hydra instantiates callbacks before the launcher).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from melanoma_lit.errors import MelanomaLitError

log = logging.getLogger(__name__)

JOB_RECORD = "job.json"
SLOT_ENV = "MELANOMA_LIT_DEVICE_SLOT"
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
    """Writes ``job.json`` (status, times, device, error) into every job folder and the sweep report at the end.

    A failed job makes Hydra's sweepers raise after the batch, so ``on_multirun_end`` never comes; the report is
    then written at exit instead, listing the failed jobs (and those never launched).
    """

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self._started: float | None = None
        self._sweep_dir: Path | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if _is_rank_zero():
            path = Path(config.hydra.runtime.output_dir) / JOB_RECORD
            record = job_record(config, job_return, self._started, time.time())
            write_json(path, with_earlier_attempts(record, path))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.report:
            self._sweep_dir = Path(config.hydra.sweep.dir)
            atexit.register(self._report_in_new_process)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._report_in_new_process)
        if self._sweep_dir is not None:
            write_sweep_report(self._sweep_dir)

    def _report_in_new_process(self) -> None:
        """At exit the interpreter is shutting down and refuses imports that start threads (the report needs some),
        so a fresh one writes the report."""
        subprocess.run([sys.executable, "-m", "melanoma_lit.report", str(self._sweep_dir)], check=False)


def write_sweep_report(sweep_dir: Path) -> None:
    """The report of a finished sweep; a report that cannot be written is logged, never fails the sweep."""
    from melanoma_lit.analysis import write_report

    retry = f"python -m melanoma_lit.report {sweep_dir}"
    try:
        files = write_report(sweep_dir)
    except MelanomaLitError as error:
        log.warning("no sweep report: %s (retry: %s)", error, retry)
        return
    except Exception:
        log.exception("could not write the sweep report; retry with: %s", retry)
        return
    log.info("sweep report: %s and %s", files.markdown, files.html)


def job_record(config: DictConfig, job_return: JobReturn, started: float | None, ended: float) -> dict[str, Any]:
    """What ``job.json`` holds: enough to tell a failed job from a missing one and to show why it failed."""
    failed = job_return.status == JobStatus.FAILED
    value = job_return._return_value  # the public property re-raises a failed job's exception
    record: dict[str, Any] = {
        "status": "failed" if failed else "completed",
        "job_num": OmegaConf.select(config, "hydra.job.num"),
        "overrides": list(OmegaConf.select(config, "hydra.overrides.task", default=[])),
        "started": _iso(started),
        "ended": _iso(ended),
        "seconds": None if started is None else round(ended - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device_slot": os.environ.get(SLOT_ENV),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "return_value": value if isinstance(value, (int, float)) and not failed else None,
    }
    if failed and isinstance(value, BaseException):
        record["error"] = f"{type(value).__name__}: {value}"
        record["traceback"] = "".join(traceback.format_exception(value))
    return record


def with_earlier_attempts(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """``record`` with the earlier records of ``path`` under ``attempts``: a requeued or resumed job (ckpt_path=last)
    starts again in its folder, and the record of a finished attempt is not to be lost."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):  # the first attempt (or an unreadable record: nothing to keep)
        return record
    return {**record, "attempts": [*earlier.pop("attempts", []), earlier]}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic, so a report reading the sweep while jobs run never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(partial, path)


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat()


def _is_rank_zero() -> bool:
    """DDP ranks other than 0 rerun the Hydra job in the same folder; only rank 0 records it."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)
