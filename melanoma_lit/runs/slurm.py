"""``hydra/launcher=slurm``: Hydra's submitit launcher, made to fit CPU and GPU partitions alike.

What it adds to ``hydra_plugins.hydra_submitit_launcher``:

- resources from the trainer: GPUs only where the trainer uses them (``trainer=gpu``: ``trainer.devices``; CPU and
  ``auto``: none), one task per GPU and at least one (``resources``);
- a request the cluster refuses (sbatch's error) becomes one paragraph naming the launcher key to change, exit 2
  (``refusal_message``);
- the sweep ends when its jobs leave the queue, also on clusters without accounting (no ``sacct``), where submitit
  alone would wait for ever for a job that was cancelled or killed; such a job is recorded as failed and the other
  jobs go on (``SlurmLauncher.launch``).

Each job runs ``sys.executable`` on the node with the submitting shell's environment (sbatch exports it), so the
node must see this Python and the sweep folder (a shared filesystem).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import DictConfig, OmegaConf

from melanoma_lit.errors import ConfigError

log = logging.getLogger(__name__)

# States a job no longer leaves (squeue); a requeued job is PENDING again, never one of these
_ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}
_POLL_S = 2.0
_RESULT_GRACE_S = 15.0

# sbatch's words for a refused request -> the launcher keys that make it
_REFUSALS = (
    ("Requested node configuration is not available", ("mem_gb", "cpus_per_task", "gpus_per_node", "constraint")),
    ("Memory specification can not be satisfied", ("mem_gb",)),
    ("Invalid partition name", ("partition",)),
    ("Invalid account", ("account", "partition")),
    ("Invalid qos", ("qos", "account")),
    ("QOSMax", ("qos", "timeout_min", "gpus_per_node")),
    ("time limit", ("timeout_min", "partition")),
    ("Invalid generic resource", ("gpus_per_node",)),
    ("gres", ("gpus_per_node",)),
    ("Invalid feature specification", ("constraint",)),
    ("ntasks-per-node", ("tasks_per_node",)),
    # squeue's reasons of a job sbatch took that no wait will start (EnforcePartLimits=NO lets such jobs in)
    ("PartitionConfig", ("cpus_per_task", "mem_gb", "gpus_per_node", "tasks_per_node", "nodes")),
    ("PartitionTimeLimit", ("timeout_min", "partition")),
    ("PartitionNodeLimit", ("nodes", "partition")),
    ("BadConstraints", ("constraint", "gpus_per_node")),
    ("InvalidAccount", ("account",)),
    ("InvalidQOS", ("qos",)),
)
_NEVER_STARTS = (
    "PartitionConfig",
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
)


def resources(params: dict[str, Any], trainer: DictConfig | dict | None) -> dict[str, Any]:
    """``gpus_per_node`` and ``tasks_per_node`` for sbatch: the configured values, or what the trainer uses.

    GPUs: none unless the trainer runs on GPUs (``trainer=gpu``/``ddp``: ``trainer.devices`` of them); DDP on GPUs
    over every visible device (``devices=-1``) needs the number given. Tasks: one per GPU (Lightning's SLURM
    environment makes each task one DDP rank), on CPU one per DDP process (``trainer=ddp trainer.accelerator=cpu
    trainer.devices=2``), and never fewer than one.
    """
    trainer = OmegaConf.to_container(trainer, resolve=False) if OmegaConf.is_config(trainer) else dict(trainer or {})
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", 1)
    counted = isinstance(devices, int) and not isinstance(devices, bool) and devices > 0
    gpus = params.get("gpus_per_node")
    if gpus is None:
        if accelerator not in ("gpu", "cuda"):
            gpus = 0
        elif counted:
            gpus = devices
        else:
            raise ConfigError(
                f"hydra/launcher=slurm: trainer.devices={devices} uses every GPU of a node, and SLURM must be told "
                "how many to give each job: set hydra.launcher.gpus_per_node=<GPUs per node> and trainer.devices "
                "to the same number."
            )
    tasks = params.get("tasks_per_node")
    if tasks is None:
        distributed = "ddp" in str(trainer.get("strategy", ""))
        tasks = gpus if gpus > 0 else (devices if distributed and counted else 1)
    if int(tasks) < 1:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks}: a job needs at least one task. Leave it null (one per GPU, at "
            "least one) or give the number of DDP processes per node."
        )
    return {"gpus_per_node": int(gpus) or None, "tasks_per_node": int(tasks)}


def refusal_message(sbatch_error: str, params: dict[str, Any]) -> str:
    """One paragraph: what sbatch said, the request it refused and the launcher keys to change."""
    lines = [line.strip().removeprefix("sbatch: error: ").strip() for line in sbatch_error.strip().splitlines()]
    said = "; ".join(line for line in lines if line) or "(no message)"
    keys: list[str] = []
    for words, culprits in _REFUSALS:
        if words.lower() in said.lower():
            keys += [key for key in culprits if key not in keys]
    keys = keys or ["partition", "account", "qos", "timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node"]
    request = ", ".join(f"hydra.launcher.{key}={_shown(params.get(key))}" for key in keys)
    return (
        f"the SLURM cluster refused the job array: {said}. The request: {request}. Change the value the cluster "
        "cannot give (its partitions and their nodes' CPUs, memory and GPUs: `sinfo -o '%P %c %m %G %l'`; your "
        "accounts and QOS: `sacctmgr show assoc user=$USER`), e.g. hydra.launcher.mem_gb=16; the README's table "
        "under Sweeps lists every key."
    )


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


class SlurmLauncher(SubmititSlurmLauncher):
    """Hydra's submitit SLURM launcher with resources that fit the partition, sbatch's refusals explained and
    sweeps that end without accounting (see the module docstring)."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        try:
            self.params.update(resources(self.params, config.get("trainer")))
        except ConfigError as error:
            _refuse(str(error), error)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """As Hydra's submitit launcher launches (one job array), then waits as ``wait_for`` does."""
        import submitit
        from submitit.core.utils import FailedJobError

        assert self.config is not None
        params = dict(self.params)
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params["submitit_folder"],
            slurm_max_num_timeout=params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in base else f"{self._EXECUTOR}_{key}": value
                for key, value in params.items()
                if key not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("SLURM sweep of %d jobs in %s", len(job_overrides), sweep_dir)
        calls = []
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            calls.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*calls, strict=True))
        except FailedJobError as error:
            _refuse(refusal_message(str(error), params), error)
        array = jobs[0].job_id.split("_")[0]
        log.info("submitted SLURM job array %s", array)
        try:
            wait_for(jobs)
        except NeverStarts as error:
            subprocess.run(["scancel", array], capture_output=True, timeout=60, check=False)
            said = f"its jobs wait with reason {error.reason}, which no wait ends, so job array {array} was cancelled"
            _refuse(refusal_message(said, params), error)
        return [self._outcome(job, list(overrides)) for job, overrides in zip(jobs, job_overrides, strict=True)]

    def _outcome(self, job: Any, overrides: list[str]) -> JobReturn:
        """The job's JobReturn; one that left the queue without a result (cancelled, killed, out of memory) is a
        failed one, so the sweep goes on and its report lists it."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        deadline = time.monotonic() + _RESULT_GRACE_S  # a shared filesystem may show the file a little later
        while not _has_result(job) and time.monotonic() < deadline:
            time.sleep(1)
        if _has_result(job):
            try:
                return job.results()[0]
            except (UncompletedJobError, FailedJobError) as error:
                reason = str(error)
        else:
            reason = (
                f"it left the queue without a result (cancelled, killed or out of memory); its log: {job.paths.stderr}"
            )
        log.error("SLURM job %s failed: %s", job.job_id, reason.splitlines()[0])
        outcome = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        outcome.return_value = RuntimeError(f"SLURM job {job.job_id}: {reason}")
        return outcome


class NeverStarts(Exception):
    """A job of the sweep waits for a reason no wait ends (it asks for more than the partition has or allows)."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"SLURM job {job_id} waits with reason {reason}")
        self.reason = reason


def _refuse(message: str, error: Exception) -> NoReturn:
    """The cluster's refusal as one paragraph and exit 2, as the project's other errors (a traceback too with
    HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise ConfigError(message) from error
    print(f"\nError: {message}\n", file=sys.stderr)
    raise SystemExit(2) from None


def wait_for(jobs: Sequence[Any], poll_s: float = _POLL_S) -> None:
    """Until every job has written its result or left the queue (``squeue``, which needs no accounting).

    A job that leaves the queue without a result was cancelled or killed; a requeued one is back in the queue. A
    job pending for a reason no wait ends (``PartitionConfig``: more CPUs than a node has, ...) raises NeverStarts.
    """
    pending = list(jobs)
    while pending:
        states = queue_states([job.job_id for job in pending])
        for job_id, (state, reason) in (states or {}).items():
            if state == "PENDING" and reason in _NEVER_STARTS:
                raise NeverStarts(job_id, reason)
        pending = [job for job in pending if not _done(job, states)]
        if pending:
            time.sleep(poll_s)


def _done(job: Any, states: dict[str, tuple[str, str]] | None) -> bool:
    if _has_result(job):
        return True
    if states is None:  # squeue did not answer: ask again at the next poll
        return False
    state, _ = states.get(job.job_id, (None, None))
    return state is None or state in _ENDED


def _has_result(job: Any) -> bool:
    """Every task of the job has written its result file (a DDP job has one task per rank)."""
    tasks = job._sub_jobs or [job]
    return all(task.paths.result_pickle.exists() for task in tasks)


def queue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` of the given jobs still in SLURM's queue (array tasks as ``<array>_<index>``,
    pending ones of an array also as ``<array>_[<range>]``); None when squeue cannot be asked."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    command = ["squeue", "--noheader", "--array", "--format=%i %T %r", f"--jobs={','.join(arrays)}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        # a job array SLURM has already forgotten (finished longer than MinJobAge ago) is not an error for us
        return {} if "Invalid job id" in result.stderr else None
    states = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = ([*line.split(maxsplit=2), "", ""])[:3]
        states[job_id] = (state, reason.strip())
    return states
