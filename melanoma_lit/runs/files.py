"""A run folder belongs to one run: its files, its job record, and resuming it explicitly, never overwriting it.

``ckpt_path=last`` with ``hydra.run.dir`` pointing at an earlier run continues it from its newest readable
``checkpoints/last*.ckpt`` (written every epoch and on SIGTERM/SIGUSR1, see melanoma_lit.callbacks.resilience) or
Lightning's SLURM ``hpc_ckpt_*.ckpt``, or starts it fresh while it has none, so one command serves the first start
and every requeue of a job. A resumed start keeps the first start's files: its resolved config goes to
``config.resume-<n>.yaml`` and Hydra's to ``.hydra/resume-<n>/``; a finished run is left untouched.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import pickle
import socket
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from melanoma_lit.data.atomic import replaced
from melanoma_lit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
VAL_PREDICTIONS = "val_predictions.csv"
CHECKPOINT_DIR = "checkpoints"
JOB_RECORD = "job.json"  # each job's outcome (runs.hydra_callbacks.SweepRecorder), read by the sweep report
SLOT_ENV = "MELANOMA_LIT_DEVICE_SLOT"  # the device slot of a parallel sweep job (runs.hydra_callbacks.DeviceSlots)
_HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's own, on SLURM's requeue signal, in the run folder
_RUN_OUTPUTS = (METRICS_FILE, VAL_PREDICTIONS, f"{CHECKPOINT_DIR}/*.ckpt", _HPC_CHECKPOINTS)


def run_outputs(output_dir: str | Path) -> list[Path]:
    """What makes a folder a run's: its metrics, predictions and checkpoints."""
    return sorted(path for pattern in _RUN_OUTPUTS for path in Path(output_dir).glob(pattern))


def check_run_dir(output_dir: str | Path, ckpt_path: str | None) -> None:
    """Refuse a fresh run in a folder that holds a run, and any resume that would overwrite a finished one."""
    output_dir = Path(output_dir)
    outputs = run_outputs(output_dir)
    if ckpt_path is None and outputs:
        shown = ", ".join(str(path.relative_to(output_dir)) for path in outputs[:3])
        raise ConfigError(
            f"{output_dir} already holds a run ({shown}); a new run would overwrite it. Leave hydra.run.dir at its "
            "default so the new run gets its own folder, or continue that training run with ckpt_path=last."
        )
    if ckpt_path not in (None, "last") and (output_dir / METRICS_FILE).exists():
        raise ConfigError(
            f"{output_dir} holds a finished run ({METRICS_FILE}); training it further here would overwrite its "
            f"results. Leave hydra.run.dir at its default and keep ckpt_path={ckpt_path} to continue in a new folder."
        )


def finished_metrics(output_dir: str | Path) -> dict[str, float] | None:
    """The final metrics of a finished run in ``output_dir``, None while it has not finished."""
    path = Path(output_dir) / METRICS_FILE
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())["metrics"]
    return {key: math.nan if value is None else float(value) for key, value in metrics.items()}


def unreadable(checkpoint: str | Path) -> str | None:
    """Why ``checkpoint`` cannot resume a run (truncated, corrupt, not a training checkpoint), None if it can."""
    import torch  # here, not at import: Hydra imports this module for every command, --help included

    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        return f"{type(error).__name__}: {str(error)[:160]}"
    if not isinstance(content, dict) or not {"state_dict", "loops"} <= content.keys():
        return "not a Lightning training checkpoint (no state_dict and loop state)"
    return None


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: undefined metrics are written as null (finished_metrics reads them back as NaN)."""
    return {key: (value if math.isfinite(value) else None) for key, value in metrics.items()}


def write_metrics(output_dir: str | Path, metrics: dict[str, float], **details: Any) -> None:
    """``metrics.json``: the final ``metrics`` first, then what produced them (``details``)."""
    summary = {"metrics": finite(metrics), **details}
    path = Path(output_dir) / METRICS_FILE
    with replaced(path) as partial:  # an interrupt leaves no half file
        partial.write_text(json.dumps(summary, indent=2, default=str, allow_nan=False))


def resolve_resume(output_dir: str | Path, checkpoint_dir: str | Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from (None: start fresh), after check_run_dir.

    ``last`` takes the newest readable candidate: a checkpoint cut short (a kill during a copy across file
    systems, a full disk) is passed over with a warning, never deleted.
    """
    check_run_dir(output_dir, ckpt_path)
    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError(
                f"ckpt_path={ckpt_path}: file not found. Give a checkpoint file "
                f"(<run dir>/{CHECKPOINT_DIR}/last.ckpt), or ckpt_path=last with hydra.run.dir=<run dir>."
            )
        if problem := unreadable(ckpt_path):
            raise DataError(f"ckpt_path={ckpt_path}: cannot resume from it ({problem}). Give another checkpoint file.")
        return ckpt_path
    candidates = [*Path(checkpoint_dir).glob("last*.ckpt"), *Path(output_dir).glob(_HPC_CHECKPOINTS)]
    if not candidates:
        log.info("ckpt_path=last: no checkpoint in %s yet, so training starts from scratch", checkpoint_dir)
        return None
    for candidate in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        if (problem := unreadable(candidate)) is None:
            log.info("resuming from %s", candidate)
            return str(candidate)
        log.warning("%s: cannot resume from it (%s); trying an older checkpoint", candidate, problem)
    raise DataError(
        f"ckpt_path=last: none of {sorted(path.name for path in candidates)} in {output_dir} can be read (truncated "
        "or corrupt). Move them out of the run folder to train this run again from scratch, or give "
        "ckpt_path=<a good checkpoint file>."
    )


# Keys a continued run may change: where things are and how fast they run, not what is trained.
RUN_TIME_KEYS = (
    "ckpt_path",
    "paths",
    "hydra",
    "logger",
    "task_name",
    "trainer.devices",
    "trainer.accelerator",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.default_root_dir",
    "trainer.enable_model_summary",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.eval_batch_size",
    "data.cache_dir",
    "callbacks",
    "model.temperature",  # fitted after training: a run begun before it existed, or with another mode, continues
)
# Callbacks observe and save a run; these two change what it trains.
TRAINING_CALLBACKS = ("callbacks.backbone_freeze", "callbacks.early_stopping")


def check_resume(cfg: DictConfig, output_dir: str | Path, resume_from: str | None) -> None:
    """A continued run trains what its first start trained: refuse ``ckpt_path=last`` when the run's saved config
    differs from this one in anything but run-time knobs (listing the keys), and any checkpoint of another label
    set or backbone."""
    if resume_from is None:
        return
    output_dir = Path(output_dir)
    saved = sorted(output_dir.glob("config.resume-*.yaml"), key=lambda p: int(p.stem.rpartition("-")[2]))
    saved = saved[-1:] or [output_dir / "config.yaml"]
    if cfg.get("ckpt_path") == "last" and saved[0].is_file():
        before = _flat(OmegaConf.to_container(OmegaConf.load(saved[0]), resolve=False))
        now = _flat(OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))))  # as saved
        changed = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key) and _trained(key))
        if changed:
            shown = "; ".join(f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in changed[:6])
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            raise ConfigError(
                f"ckpt_path=last: the run in {output_dir} was trained with another config ({shown}{more}; saved in "
                f"{saved[0].name}). Continue it with the same settings (drop those overrides), or start a new run "
                "without ckpt_path=last in another hydra.run.dir."
            )
    hparams = _hyper_parameters(resume_from)
    classes = list(cfg.data.classes) if OmegaConf.select(cfg, "data.classes") is not None else None
    backbone = OmegaConf.select(cfg, "backbone.name")
    theirs_classes = hparams.get("classes")
    theirs_backbone = (hparams.get("backbone") or {}).get("name")
    for what, ours, theirs in (("data.classes", classes, theirs_classes), ("backbone.name", backbone, theirs_backbone)):
        if ours is not None and theirs is not None and (list(theirs) if isinstance(theirs, list) else theirs) != ours:
            raise ConfigError(
                f"ckpt_path={cfg.get('ckpt_path')}: {resume_from} was trained with {what}={theirs}, this run has "
                f"{what}={ours}; its weights cannot continue this training. Resume with the checkpoint's {what}, or "
                "start a new run from scratch without ckpt_path."
            )


def _trained(key: str) -> bool:
    if any(key == k or key.startswith(k + ".") for k in TRAINING_CALLBACKS):
        return True
    return not any(key == k or key.startswith(k + ".") for k in RUN_TIME_KEYS) and not key.endswith(
        (".root", "dirpath")
    )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _hyper_parameters(checkpoint: str | Path) -> dict[str, Any]:
    import torch

    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
        return {}
    hparams = content.get("hyper_parameters") if isinstance(content, dict) else None
    return dict(hparams) if isinstance(hparams, dict) else {}


def first_free(template: Path) -> Path:
    """``template`` (a path holding ``{n}``) with the first n = 1, 2, ... that does not exist yet."""
    return next(path for n in itertools.count(1) if not (path := Path(str(template).replace("{n}", str(n)))).exists())


def config_path(output_dir: str | Path) -> Path:
    """Where this start's resolved config goes: config.yaml, or config.resume-<n>.yaml beside the first start's."""
    path = Path(output_dir) / "config.yaml"
    return first_free(path.with_name("config.resume-{n}.yaml")) if path.exists() else path


def job_record(
    config: DictConfig, job_return: JobReturn | None, started: float | None, ended: float | None
) -> dict[str, Any]:
    """What ``job.json`` holds: enough to tell a failed job from a missing one and to show why it failed.

    ``job_return`` None: the record written when the job starts (status ``running``), which stays if the process
    is killed; the job's next start then files it as ``interrupted``.
    """
    failed = job_return is not None and job_return.status == JobStatus.FAILED
    value = None if job_return is None else job_return._return_value  # the property re-raises a failed job's error
    status = "running" if job_return is None else "failed" if failed else "completed"
    record: dict[str, Any] = {
        "status": status,
        "job_num": OmegaConf.select(config, "hydra.job.num"),
        "overrides": list(OmegaConf.select(config, "hydra.overrides.task", default=[])),
        "started": _iso(started),
        "ended": _iso(ended),
        "seconds": None if started is None or ended is None else round(ended - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device_slot": os.environ.get(SLOT_ENV),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": slurm_job_id(),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)) if slurm_job_id() else None,
        "return_value": value if isinstance(value, (int, float)) and not failed else None,
    }
    if failed and isinstance(value, BaseException):
        record["error"] = f"{type(value).__name__}: {value}"
        record["traceback"] = "".join(traceback.format_exception(value))
    return record


def slurm_job_id() -> str | None:
    """This process's SLURM job, as squeue and scontrol name it (``<array job>_<index>`` for an array task)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID")


def with_earlier_attempts(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """``record`` with the earlier records of ``path`` under ``attempts``: a requeued or resumed job (ckpt_path=last)
    starts again in its folder, and the record of a finished attempt is not to be lost.

    The record this same start wrote is updated; one an earlier start left ``running`` was cut off (killed) and is
    kept as ``interrupted``.
    """
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):  # the first attempt (or an unreadable record: nothing to keep)
        return record
    attempts = earlier.pop("attempts", [])
    same_start = record.get("pid") is not None and record.get("started") is not None
    if same_start and (earlier.get("pid"), earlier.get("started")) == (record["pid"], record["started"]):
        record = {**earlier, **record}  # this start's own record, updated (keeping why it was interrupted)
        return {**record, "attempts": attempts} if attempts else record
    if earlier.get("status") == "running":
        earlier["status"] = "interrupted"
    return {**record, "attempts": [*attempts, earlier]}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic, so a report reading the sweep while jobs run never sees half a file."""
    with replaced(path) as partial:
        partial.write_text(json.dumps(payload, indent=2, default=str))


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat()
