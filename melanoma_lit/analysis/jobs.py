"""Every job of a Hydra multirun folder, the expected ones included, and what became of each.

Expected jobs come from ``multirun.yaml`` (the basic sweeper's grid, re-expanded as Hydra expands it, or the Optuna
sweeper's ``n_trials``); started ones from the ``.hydra/`` folders. A job is *completed* when it left
``metrics.json``, *failed* when its ``job.json`` (melanoma_lit.runs.hydra_callbacks.SweepRecorder) says so,
*unfinished* when it started and left neither (killed, out of memory, still running), *missing* when it never started.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from melanoma_lit.errors import DataError
from melanoma_lit.runs.files import METRICS_FILE
from melanoma_lit.runs.hydra_callbacks import JOB_RECORD

MULTIRUN_FILE = "multirun.yaml"
OPTUNA_RESULTS = "optimization_results.yaml"
FOLD_KEY = "data.fold"
COMPLETED, FAILED, NO_METRICS, UNFINISHED, MISSING = "completed", "failed", "no metrics", "unfinished", "missing"
_LOG_TAIL_LINES = 8


@dataclass
class Job:
    """One job of a sweep. ``metrics`` are the final validation metrics (NaN where undefined)."""

    num: int
    overrides: list[str]
    status: str
    dir: Path | None = None
    cwd: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    backbone: str | None = None
    fold: int | str | tuple[int, ...] | None = None  # a tuple: the job cross-validated these folds
    folds_file: str | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


@dataclass
class Sweep:
    """A multirun folder: its configuration (``multirun.yaml``), its jobs by number, Optuna's result if any."""

    dir: Path
    config: DictConfig
    jobs: list[Job]
    optuna: dict[str, Any] | None = None

    @property
    def overrides(self) -> list[str]:
        return list(OmegaConf.select(self.config, "hydra.overrides.task", default=[]) or [])

    @property
    def sweeper(self) -> str:
        return _short_target(self.config, "hydra.sweeper._target_")

    @property
    def launcher(self) -> str:
        return _short_target(self.config, "hydra.launcher._target_")

    @property
    def monitor(self) -> str | None:
        return OmegaConf.select(self.config, "monitor", default=None)

    def counts(self) -> dict[str, int]:
        counts = Counter(job.status for job in self.jobs)
        statuses = (COMPLETED, FAILED, NO_METRICS, UNFINISHED, MISSING)
        return {"expected": len(self.jobs), **{status: counts[status] for status in statuses}}


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read a multirun folder: every job it should hold and every job it does hold, in job-number order."""
    sweep_dir = Path(sweep_dir)
    started = {num: path for path, num in _job_dirs(sweep_dir)}
    config = _sweep_config(sweep_dir, started)
    if config is None:
        raise DataError(
            f"{sweep_dir} holds neither {MULTIRUN_FILE} nor job folders (with .hydra/); pass the folder a "
            "multirun wrote, e.g. multirun/train/<date>/<time>."
        )
    expected = expected_jobs(config)
    jobs = []
    for num in sorted(set(expected) | set(started)):
        if num in started:
            jobs.append(read_job(started[num], num))
        else:
            jobs.append(Job(num=num, overrides=expected[num], status=MISSING))
    optuna_path = sweep_dir / OPTUNA_RESULTS
    optuna = OmegaConf.to_container(OmegaConf.load(optuna_path)) if optuna_path.exists() else None
    return Sweep(dir=sweep_dir, config=config, jobs=jobs, optuna=optuna)


def expected_jobs(config: DictConfig) -> dict[int, list[str]]:
    """Job number -> overrides, as the sweeper of ``multirun.yaml`` launches them.

    The basic sweeper's grid is re-expanded as it expands it, with Hydra's override parser: ``hydra.sweeper.params``
    then the command line's overrides, one axis per key in the order it first appears (a key given again replaces
    its values in place), the cartesian product numbered with the last key varying fastest. For other sweepers
    (Optuna) only the number of trials is known, so their overrides are left empty.
    """
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if target.endswith("BasicSweeper"):
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += list(OmegaConf.select(config, "hydra.overrides.task", default=[]))
        axes: dict[str, list[str]] = {}
        for override in OverridesParser.create().parse_overrides(arguments):
            key = override.get_key_element()
            if not override.is_sweep_override():
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                raise DataError(f"{override.input_line}: the basic sweeper sweeps only choices and ranges.")
        return {num: list(job) for num, job in enumerate(itertools.product(*axes.values()))}
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    return {num: [] for num in range(int(n_trials))} if n_trials else {}


def override_map(overrides: list[str]) -> dict[str, str]:
    """``["backbone=resnet18", "data.fold=0"]`` -> ``{"backbone": "resnet18", "data.fold": "0"}``."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {override.get_key_element(): override.get_value_element_as_str() for override in parsed}


def read_job(job_dir: Path, num: int) -> Job:
    """One started job: its overrides, outcome, final metrics, and error where it failed."""
    overrides = list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    cwd = Path(str(OmegaConf.select(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml"), "hydra.runtime.cwd")))
    record = _read_json(job_dir / JOB_RECORD) or {}
    given = override_map(overrides)
    job = Job(
        num=num,
        overrides=overrides,
        status=UNFINISHED,
        dir=job_dir,
        cwd=cwd,
        backbone=given.get("backbone.name", given.get("backbone")),
        fold=_fold(given.get(FOLD_KEY)),
        seconds=record.get("seconds"),
        record=record,
    )
    summary = _read_json(job_dir / METRICS_FILE)
    if summary is not None:
        job.status = COMPLETED
        job.metrics = {key: math.nan if value is None else float(value) for key, value in summary["metrics"].items()}
        job.backbone = summary.get("backbone", job.backbone)
        job.fold = _fold(summary.get("fold", job.fold))
        folds_file = (summary.get("data") or {}).get("folds_file")
        job.folds_file = str(cwd / folds_file) if folds_file else None  # stored relative to where the job ran
    elif record.get("status") == "failed":
        job.status = FAILED
        job.error, job.traceback = record.get("error"), record.get("traceback")
    elif record.get("status") == "completed":
        job.status = NO_METRICS
    else:
        job.error = _log_tail(job_dir)
    return job


def _sweep_config(sweep_dir: Path, started: dict[int, Path]) -> DictConfig | None:
    """``multirun.yaml``; the Optuna sweeper writes none, so then the first job's config with its Hydra settings
    (its own overrides dropped: they are one trial's, not the sweep's)."""
    if (sweep_dir / MULTIRUN_FILE).exists():
        return OmegaConf.load(sweep_dir / MULTIRUN_FILE)
    if not started:
        return None
    first = started[min(started)] / ".hydra"
    config = OmegaConf.merge(OmegaConf.load(first / "config.yaml"), OmegaConf.load(first / "hydra.yaml"))
    config.hydra.overrides.task = []
    return config


def _job_dirs(sweep_dir: Path) -> list[tuple[Path, int]]:
    """(folder, job number) of every job that started: the folders holding ``.hydra/hydra.yaml``."""
    found = []
    for hydra_file in sorted(sweep_dir.rglob(".hydra/hydra.yaml")):
        num = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num")
        if num is not None:
            found.append((hydra_file.parent.parent, int(num)))
    return found


def _fold(value: Any) -> int | str | tuple[int, ...] | None:
    """A fold number, ``all`` / ``official``, or the folds a cross-validating job trained (a tuple)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, list):
        return tuple(value)
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _log_tail(job_dir: Path) -> str | None:
    """The end of the job's own log: the only trace a job killed from outside leaves."""
    logs = sorted(job_dir.glob("*.log"))
    if not logs:
        return None
    lines = logs[0].read_text(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or None


def _short_target(config: DictConfig, key: str) -> str:
    target = OmegaConf.select(config, key, default=None)
    return str(target).rsplit(".", 1)[-1] if target else "unknown"
