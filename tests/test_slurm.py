"""Sweeps on a real SLURM cluster: ``hydra/launcher=slurm`` submits job arrays, jobs are requeued mid-training and
resume exactly, DDP runs as two SLURM tasks, and a request the cluster refuses is explained.

They need a controller that answers (``scontrol ping``) with a CPU partition of 2 CPUs: the single-node cluster of
``.ci/slurm.sh start`` (which CI starts before the tests), found through ``SLURM_CONF`` or at the script's default
place; elsewhere they skip, saying so. ``MELANOMA_LIT_SLURM_PARTITION`` names another partition (default ``debug``).
The jobs run this Python with this checkout on ``PYTHONPATH`` (sbatch exports the submitting environment), one
intra-op thread each (``OMP_NUM_THREADS=1``) so that runs on different CPUs do the same arithmetic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from melanoma_lit.runs.files import METRICS_FILE, VAL_PREDICTIONS
from melanoma_lit.runs.hydra_callbacks import JOB_RECORD
from tests.conftest import REPO_ROOT
from tests.test_resilience import _epochs_ended, _history, _wait_for
from tests.test_sweep import TINY, job_records, run_train

pytestmark = pytest.mark.slurm

LOCAL_CLUSTER_CONF = Path(os.environ.get("MELANOMA_LIT_SLURM_DIR", "/tmp/melanoma_lit-slurm")) / "slurm.conf"
PARTITION = os.environ.get("MELANOMA_LIT_SLURM_PARTITION", "debug")
JOB_TIMEOUT_S = 300  # the longest a test waits for its sweep; every wait below is bounded

# what every test job asks of the partition: one CPU and 2 GB each, 10 minutes
LAUNCHER = (
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
)
NO_REPORT = ("hydra.callbacks.sweep_report=null",)  # where the test reads no report: it takes seconds to write
# A deterministic CPU run of 4 short epochs (8 batches of 8 images at 48 px), long enough to be interrupted twice.
DETERMINISTIC = (
    "trainer=cpu",
    "backbone=resnet18",
    "backbone.pretrained=false",
    "data.input_size=48",
    "data.synthetic.n=96",
    "data.synthetic.size=64",
    "data.num_folds=3",
    "data.num_workers=0",
    "data.batch_size=8",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "scheduler.patience=0",
    "callbacks.early_stopping=null",
    "ckpt_path=last",
)


def _cluster_conf() -> Path | None:
    if os.environ.get("SLURM_CONF"):
        return Path(os.environ["SLURM_CONF"])
    return LOCAL_CLUSTER_CONF if LOCAL_CLUSTER_CONF.exists() else None


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The environment that reaches the cluster (SLURM_CONF); skips where no controller answers."""
    conf = _cluster_conf()
    env = {**os.environ, **({"SLURM_CONF": str(conf)} if conf else {})}
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM here (sbatch not found): `sudo .ci/slurm.sh start` starts a single-node test cluster")
    try:
        ping = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20)
        partition = subprocess.run(
            ["sinfo", "--noheader", "--partition", PARTITION, "--format=%a %c"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"the SLURM controller ({conf or 'default slurm.conf'}) does not answer within 20 s")
    if "is UP" not in ping.stdout:
        said = (ping.stdout.strip() or ping.stderr.strip() or "no answer").splitlines()[-1]
        pytest.skip(
            f"no SLURM controller answers ({conf or 'default slurm.conf'}: {said}): `sudo .ci/slurm.sh start` starts "
            "a single-node test cluster"
        )
    if not partition.stdout.strip().startswith("up"):
        pytest.skip(f"SLURM partition {PARTITION!r} is not up: set MELANOMA_LIT_SLURM_PARTITION to a CPU partition")
    return {"SLURM_CONF": env.get("SLURM_CONF", "")} if conf else {}


def _environment(cache_dir: Path, slurm: dict[str, str]) -> dict[str, str]:
    return {**slurm, "OMP_NUM_THREADS": "1", "MELANOMA_LIT_CACHE": str(cache_dir)}


def scontrol_job(job_id: str, env: dict[str, str]) -> dict[str, str]:
    """``scontrol show job`` as {key: value}."""
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)


def scontrol_ended(job_id: str, env: dict[str, str], timeout: float = 60) -> dict[str, str]:
    """``scontrol_job`` once the job has left RUNNING and COMPLETING: its result file comes before its processes end."""
    deadline = time.monotonic() + timeout
    while (shown := scontrol_job(job_id, env))["JobState"] in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.5)
    return shown


def _wait(condition: Callable[[], bool], what: str, process: subprocess.Popen) -> None:
    _wait_for(process, condition, what, JOB_TIMEOUT_S, output=lambda: _output(process))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _sweep(args: list[str], cache_dir: Path, cwd: Path, slurm: dict[str, str]) -> subprocess.Popen:
    """The sweep command, running while the test acts on its jobs; its output goes to ``cwd/sweep.log``."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **_environment(cache_dir, slurm)}
    environment.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "melanoma_lit.train", "-m", *LAUNCHER, *args]
    with (cwd / "sweep.log").open("w") as log:
        process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT)
    process.cwd = cwd
    return process


def _output(process: subprocess.Popen) -> str:
    """What the sweep command wrote (``_sweep`` sends it to ``sweep.log`` in its working folder)."""
    return (Path(process.cwd) / "sweep.log").read_text(errors="replace")


def test_a_two_fold_sweep_runs_as_a_slurm_job_array(tmp_path, cache_dir, slurm) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_train(
        ["-m", *LAUNCHER, "trainer=cpu", "backbone=resnet18", f"hydra.sweep.dir={sweep_dir}", *TINY, "data.fold=0,1"],
        cache_dir,
        tmp_path,
        **_environment(cache_dir, slurm),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = job_records(sweep_dir)
    assert [r["status"] for r in records] == ["completed", "completed"]
    job_ids = [r["slurm_job_id"] for r in records]
    assert job_ids[0].split("_")[0] == job_ids[1].split("_")[0] and job_ids[0] != job_ids[1]  # one array, two tasks
    for job_id in job_ids:
        shown = scontrol_ended(job_id, slurm)
        assert (shown["JobState"], shown["ExitCode"], shown["Partition"]) == ("COMPLETED", "0:0", PARTITION)
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    assert report["launcher"] == "SlurmLauncher" and report["counts"]["completed"] == 2
    assert [job["fold"] for job in report["jobs"]] == [0, 1]
    assert report["folds"]["shared"] and len(report["folds"]["folds_files"]) == 1  # one folds file for both jobs
    assert report["folds"]["matches_file"]


def test_a_requeued_job_resumes_in_its_folder_and_ends_as_the_uninterrupted_one(tmp_path, cache_dir, slurm) -> None:
    """Job 0 is requeued twice, as a cluster does it: ``scontrol requeue`` (SIGTERM, pre-emption) after its first
    epoch, then the time-limit signal submitit asks SLURM for (``--signal=USR2@<signal_delay_s>``; submitit
    requeues the job itself) after the next one. Job 1, the same run, is left alone."""
    sweep_dir = tmp_path / "sweep"
    sweep = _sweep([f"hydra.sweep.dir={sweep_dir}", *DETERMINISTIC, "data.fold=0,0"], cache_dir, tmp_path, slurm)
    run, reference = sweep_dir / "0-resnet18-fold0", sweep_dir / "1-resnet18-fold0"

    _wait(lambda: _epochs_ended(run) == [0], "the end of job 0's first epoch", sweep)
    job_id = _read_json(run / JOB_RECORD)["slurm_job_id"]
    subprocess.run(["scontrol", "requeue", job_id], env={**os.environ, **slurm}, check=True, timeout=30)
    _wait(lambda: _read_json(run / JOB_RECORD).get("slurm_restart_count") == 1, "the requeued job's start", sweep)
    resumed_after = len(_epochs_ended(run))
    _wait(lambda: len(_epochs_ended(run)) > resumed_after, "an epoch of the requeued job", sweep)
    subprocess.run(["scancel", "--signal=USR2", job_id], env={**os.environ, **slurm}, check=True, timeout=30)
    _wait(lambda: sweep.poll() is not None, "the end of the sweep", sweep)

    assert sweep.returncode == 0, _output(sweep)[-3000:]
    record = json.loads((run / JOB_RECORD).read_text())
    assert record["status"] == "completed" and record["slurm_restart_count"] == 2
    first, second = record["attempts"]
    assert (first["status"], first["slurm_restart_count"], first["slurm_job_id"]) == ("interrupted", 0, job_id)
    assert first["reason"].startswith("SIGTERM at epoch")  # pre-emption: checkpoint written, exit 143
    assert (second["status"], second["slurm_restart_count"]) == ("interrupted", 1)
    assert second["reason"].startswith("SIGUSR2 at epoch")  # stopped at a batch's end, then requeued by submitit
    shown = scontrol_ended(job_id, slurm)
    assert (shown["JobState"], shown["Restarts"]) == ("COMPLETED", "2")
    # it resumed in its own folder: each start recorded its config there, and the training history is whole
    assert {path.name for path in run.glob("config*.yaml")} == {
        "config.yaml",
        "config.resume-1.yaml",
        "config.resume-2.yaml",
    }
    assert _epochs_ended(run) == list(range(4))
    metrics = json.loads((run / METRICS_FILE).read_text())["metrics"]
    uninterrupted = json.loads((reference / METRICS_FILE).read_text())["metrics"]
    assert json.loads((reference / JOB_RECORD).read_text()).get("attempts") is None
    assert metrics.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    history, expected = (_history(path) for path in (run, reference))
    pd.testing.assert_frame_equal(history, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_job_at_its_time_limit_is_requeued_by_submitit_and_ends_as_the_uninterrupted_one(
    tmp_path, cache_dir, slurm
) -> None:
    """A real time limit: 2 minutes, and SLURM's USR2 30 s before it (slurmctld sends it up to a minute early, so
    30-90 s into each attempt, after the job's Python has started and submitit has set its handler). About 100 s of
    training need two or three attempts; each resumes from the newest checkpoint. Slow (4-6 minutes), so not in the
    default run, whose pre-emption test sends the same USR2 itself."""
    long_run = (*DETERMINISTIC, "trainer.max_epochs=40", "data.input_size=32")
    reference = tmp_path / "uninterrupted"
    local = subprocess.Popen(
        [sys.executable, "-m", "melanoma_lit.train", *long_run, f"hydra.run.dir={reference}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **_environment(cache_dir, slurm)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sweep_dir = tmp_path / "sweep"
    limits = ("hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=5")
    sweep = _sweep([*limits, f"hydra.sweep.dir={sweep_dir}", *long_run, "data.fold=0"], cache_dir, tmp_path, slurm)
    _wait_for(
        sweep, lambda: sweep.poll() is not None, "the end of the sweep", 3 * JOB_TIMEOUT_S, lambda: _output(sweep)
    )
    assert sweep.returncode == 0, _output(sweep)[-3000:]
    _, stderr = local.communicate(timeout=JOB_TIMEOUT_S)
    assert local.returncode == 0, stderr[-3000:]

    run = sweep_dir / "0-resnet18-fold0"
    record = json.loads((run / JOB_RECORD).read_text())
    assert record["status"] == "completed" and record["attempts"]  # cut off at least once by its time limit
    assert all(attempt["status"] == "interrupted" for attempt in record["attempts"])
    assert scontrol_ended(record["slurm_job_id"], slurm)["Restarts"] == str(len(record["attempts"]))
    metrics = json.loads((run / METRICS_FILE).read_text())["metrics"]
    for key, value in json.loads((reference / METRICS_FILE).read_text())["metrics"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    history, expected = (_history(path) for path in (run, reference))
    pd.testing.assert_frame_equal(history, expected, rtol=0, atol=1e-6)


def test_ddp_runs_as_two_slurm_tasks_and_rank_0_writes_the_outputs(tmp_path, cache_dir, slurm) -> None:
    """``trainer=ddp`` on CPU (gloo) as 2 SLURM tasks of 4 images per step against 1 process of 8: each step the two
    shards are the 1-process batch (data.sampling) and the gradients are averaged over them, so only BatchNorm
    differs (each rank normalises with the statistics of its 4 images, not of 8: SyncBatchNorm needs GPUs). The
    validation probabilities therefore agree to 0.05 (measured: 0.01), not to the bit, and no more is asked of the
    metrics, which on 32 validation images move by tenths with such differences."""
    common = ("backbone=resnet18", "data.num_workers=0", "trainer.precision=32-true", *TINY)
    single = run_train(
        ["trainer=cpu", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'single'}", *common],
        cache_dir,
        tmp_path,
        **_environment(cache_dir, slurm),
    )
    assert single.returncode == 0, single.stderr[-3000:]
    sweep_dir = tmp_path / "sweep"
    ddp = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false")
    result = run_train(
        [
            "-m",
            *LAUNCHER,
            f"hydra.sweep.dir={sweep_dir}",
            *ddp,
            "data.batch_size=4",
            *common,
            "data.fold=0",
            *NO_REPORT,
        ],
        cache_dir,
        tmp_path,
        **_environment(cache_dir, slurm),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = [path for path in sweep_dir.iterdir() if (path / JOB_RECORD).exists()]
    record = json.loads((job / JOB_RECORD).read_text())
    assert record["status"] == "completed" and "attempts" not in record  # one record, by rank 0
    assert scontrol_job(record["slurm_job_id"], slurm)["NumTasks"] == "2"  # --ntasks-per-node=2 from trainer.devices
    (rank_1,) = sweep_dir.glob(".submitit/*/*_1_log.err")  # submitit's log of the second task
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in rank_1.read_text()
    for log, rank in (("train.log", 0), ("train.rank1.log", 1)):  # each rank its own log, one line each
        assert (job / log).read_text().count("validation macro AUC") == 1, rank
    assert _checkpoint_step(job) == _checkpoint_step(tmp_path / "single") == 2  # the same optimizer steps
    predictions = pd.read_csv(job / VAL_PREDICTIONS).set_index("image").sort_index()
    expected = pd.read_csv(tmp_path / "single" / VAL_PREDICTIONS).set_index("image").sort_index()
    assert predictions.index.tolist() == expected.index.tolist()  # every validation image once, from both ranks
    assert (predictions - expected).abs().to_numpy().max() < 0.05
    metrics = json.loads((job / METRICS_FILE).read_text())["metrics"]
    assert metrics.keys() == json.loads((tmp_path / "single" / METRICS_FILE).read_text())["metrics"].keys()


def _checkpoint_step(run: Path) -> int:
    import torch

    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]


def _partition_most(field: str, env: dict[str, str]) -> int:
    """The largest value of an sinfo field (``%m`` memory in MB, ``%c`` CPUs) among the partition's nodes."""
    nodes = subprocess.run(
        ["sinfo", "--noheader", "--partition", PARTITION, f"--format={field}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return max(int(line.strip().rstrip("+")) for line in nodes.stdout.split())


@pytest.mark.parametrize("ask", ["memory", "cpus"])
def test_a_request_the_cluster_cannot_meet_names_the_key_to_change(tmp_path, cache_dir, slurm, ask) -> None:
    """More memory than any node has: sbatch refuses it. More CPUs: sbatch takes the job, which then waits with
    reason PartitionConfig for ever, so the launcher cancels it. Either way: one paragraph, exit 2."""
    if ask == "memory":
        request = f"hydra.launcher.mem_gb={_partition_most('%m', slurm) // 1024 + 64}"
        said = "the SLURM cluster refused the job array: "
    else:
        request = f"hydra.launcher.cpus_per_task={_partition_most('%c', slurm) * 4}"
        said = "its jobs wait with reason PartitionConfig, which no wait ends, so job array "
    result = run_train(
        ["-m", *LAUNCHER, request, f"hydra.sweep.dir={tmp_path / 'sweep'}", *NO_REPORT],
        cache_dir,
        tmp_path,
        **_environment(cache_dir, slurm),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Error: the SLURM cluster refused the job array: " in result.stderr and said in result.stderr
    assert f"The request: {request}" in result.stderr and "Traceback" not in result.stderr
    # nothing of this sweep left waiting (another suite sharing the cluster may have jobs of its own there)
    squeue = subprocess.run(
        ["squeue", "--noheader", "--format=%i %o"], env={**os.environ, **slurm}, capture_output=True, text=True
    )
    assert [line for line in squeue.stdout.splitlines() if str(tmp_path) in line] == []
