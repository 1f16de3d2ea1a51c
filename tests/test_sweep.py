"""Sweeps through the real CLI: one device slot per parallel job, SLURM submission, Optuna search, DDP on CPU."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from melanoma_lit.data.build import DataSpec, prepare_sources
from melanoma_lit.errors import ConfigError
from melanoma_lit.runs.hydra_callbacks import JOB_RECORD, claim_slot, with_earlier_attempts, write_json
from melanoma_lit.runs.slurm import refusal_message, resources
from tests.conftest import CONF_DIR, REPO_ROOT

# A training job of a few seconds: 2 training batches of 8 images at 32 px, every validation image predicted.
TINY = (
    "debug=limit",
    "data.synthetic.n=96",
    "data.synthetic.size=64",
    "data.num_folds=3",
    "data.input_size=32",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_predict_batches=1.0",
)


def run_train(args: list[str], cache_dir: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m melanoma_lit.train ARGS`` in a fresh process, as a user runs it."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MELANOMA_LIT_CACHE": str(cache_dir), **env}
    environment.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "melanoma_lit.train", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900)


def job_records(sweep_dir: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in sweep_dir.rglob(JOB_RECORD)), key=lambda r: r["job_num"])


def compose_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _hold_a_slot(lock_dir: str, n_slots: int, results, release) -> None:
    results.put(claim_slot(lock_dir, n_slots, poll_s=0.05))
    release.wait(30)


def test_claimed_slots_are_distinct_and_a_third_process_queues(tmp_path) -> None:
    context = multiprocessing.get_context("spawn")
    results, release = context.Queue(), context.Event()
    holders = [context.Process(target=_hold_a_slot, args=(str(tmp_path), 2, results, release)) for _ in range(3)]
    for process in holders:
        process.start()
    first_two = sorted(results.get(timeout=60) for _ in range(2))
    assert first_two == [0, 1]
    assert results.empty()  # the third waits while both slots are held
    release.set()
    assert results.get(timeout=60) in (0, 1)  # and gets the slot a finished process gave back
    for process in holders:
        process.join(timeout=30)


def test_a_job_started_again_in_its_folder_keeps_the_records_of_earlier_attempts(tmp_path) -> None:
    """A requeued or resumed job (ckpt_path=last) writes job.json again; no earlier record is lost."""
    path = tmp_path / JOB_RECORD
    for attempt in ({"status": "failed", "seconds": 3.0}, {"status": "completed", "seconds": 9.0}):
        write_json(path, with_earlier_attempts(attempt, path))
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["attempts"] == [{"status": "failed", "seconds": 3.0}]
    write_json(path, with_earlier_attempts({"status": "completed", "seconds": 0.5}, path))
    assert [earlier["seconds"] for earlier in json.loads(path.read_text())["attempts"]] == [3.0, 9.0]


def test_one_start_updates_its_own_record_and_a_killed_start_is_kept_as_interrupted(tmp_path) -> None:
    """A start's record goes running -> interrupted (a signal, with the reason) -> its exit's status, as one
    record; a start killed while running is filed under the next start's attempts as interrupted."""
    path = tmp_path / JOB_RECORD
    start = {"pid": 11, "started": "2026-12-06T10:00:00"}
    write_json(path, with_earlier_attempts({**start, "status": "running"}, path))
    write_json(path, {**json.loads(path.read_text()), "status": "interrupted", "reason": "SIGINT at epoch 1"})
    write_json(path, with_earlier_attempts({**start, "status": "interrupted", "error": "interrupted (Ctrl-C)"}, path))
    assert json.loads(path.read_text()) == {
        **start,
        "status": "interrupted",
        "reason": "SIGINT at epoch 1",
        "error": "interrupted (Ctrl-C)",
    }
    killed = {"pid": 12, "started": "2026-12-06T11:00:00"}
    write_json(path, with_earlier_attempts({**killed, "status": "running"}, path))
    write_json(path, with_earlier_attempts({"pid": 13, "started": "2026-12-06T12:00:00", "status": "completed"}, path))
    record = json.loads(path.read_text())
    assert [(attempt["pid"], attempt["status"]) for attempt in record["attempts"]] == [
        (11, "interrupted"),
        (12, "interrupted"),
    ]
    assert (record["pid"], record["status"]) == (13, "completed")


def test_gpus_launcher_runs_jobs_in_parallel_each_on_its_own_device(tmp_path, cache_dir, compose_train) -> None:
    # generated up front: ensure_synthetic is not safe for two processes generating the same set at once
    prepare_sources(DataSpec.from_config(OmegaConf.to_container(compose_train(*TINY).data, resolve=True)))
    sweep_dir = tmp_path / "sweep"
    result = run_train(
        ["-m", "hydra/launcher=gpus", f"hydra.sweep.dir={sweep_dir}", *TINY, "data.fold=0,1"],
        cache_dir,
        tmp_path,
        CUDA_VISIBLE_DEVICES="0,1",  # two device slots; on a CPU-only machine the jobs still train on the CPU
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    records = job_records(sweep_dir)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert sorted(p.name for p in sweep_dir.glob("*-fold*")) == ["0-resnet18-fold0", "1-resnet18-fold1"]
    assert sorted(r["device_slot"] for r in records) == ["0", "1"]
    assert sorted(r["cuda_visible_devices"] for r in records) == ["0", "1"]  # each job saw only its own GPU
    assert records[0]["pid"] != records[1]["pid"]
    starts = [datetime.fromisoformat(r["started"]) for r in records]
    ends = [datetime.fromisoformat(r["ended"]) for r in records]
    assert max(starts) < min(ends)  # both were running at the same time
    report = json.loads((sweep_dir / "report" / "report.json").read_text())  # written at the end of the sweep
    assert report["counts"]["completed"] == 2 and report["launcher"] == "JoblibLauncher"


def test_slurm_launcher_renders_the_configured_sbatch_script(tmp_path, cache_dir) -> None:
    """No cluster here: a stand-in sbatch keeps the script submitit wrote and refuses it, so no job starts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_RECORD"\necho "sbatch: no cluster" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    script, sweep_dir = tmp_path / "job.sbatch", tmp_path / "sweep"
    result = run_train(
        [
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.timeout_min=240",
            "trainer=ddp",
            "ckpt_path=last",
            f"hydra.sweep.dir={sweep_dir}",
            "backbone=resnet18,densenet201",
            "data.fold=0,1,2",
        ],
        cache_dir,
        tmp_path,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SBATCH_RECORD=str(script),
    )
    assert (
        result.returncode == 2
        and "Error: the SLURM cluster refused the job array: sbatch: no cluster." in result.stderr
    )
    lines = set(script.read_text().splitlines())
    expected = {
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",  # one DDP rank per GPU
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --array=0-5%6",  # the 6 jobs as one array
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
    }
    assert expected <= lines
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    assert report["counts"]["expected"] == 6 and report["counts"]["missing"] == 6  # listed, not silently dropped


@pytest.mark.parametrize(
    ("launcher", "trainer", "expected"),
    [
        ({}, {"accelerator": "cpu", "devices": 1}, {"gpus_per_node": None, "tasks_per_node": 1}),  # a CPU partition
        ({}, {"accelerator": "auto", "devices": 1}, {"gpus_per_node": None, "tasks_per_node": 1}),
        ({}, {"accelerator": "gpu", "devices": 1}, {"gpus_per_node": 1, "tasks_per_node": 1}),  # trainer=gpu
        (
            {"gpus_per_node": 4},
            {"accelerator": "gpu", "devices": 4, "strategy": "ddp"},
            {"gpus_per_node": 4, "tasks_per_node": 4},
        ),
        ({}, {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}, {"gpus_per_node": None, "tasks_per_node": 2}),
        (
            {"gpus_per_node": 0, "tasks_per_node": 3},
            {"accelerator": "cpu"},
            {"gpus_per_node": None, "tasks_per_node": 3},
        ),
    ],
)
def test_slurm_resources_fit_cpu_and_gpu_partitions(launcher, trainer, expected) -> None:
    """GPUs only where the trainer uses them or they are asked for; one task per GPU or DDP process, at least one."""
    assert resources(launcher, trainer) == expected


def test_slurm_resources_refuse_what_sbatch_would() -> None:
    with pytest.raises(ConfigError, match=r"trainer.devices=-1 .* hydra.launcher.gpus_per_node=<GPUs per node>"):
        resources({}, {"accelerator": "gpu", "devices": -1, "strategy": "ddp"})  # trainer=ddp: every visible GPU
    with pytest.raises(ConfigError, match="tasks_per_node=0: a job needs at least one task"):
        resources({"tasks_per_node": 0}, {"accelerator": "cpu"})


def test_an_sbatch_refusal_names_the_launcher_keys_that_made_it() -> None:
    said = "sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job submission failed: "
    message = refusal_message(
        said + "Requested node configuration is not available", {"mem_gb": 64, "cpus_per_task": 8}
    )
    assert message.startswith(
        "the SLURM cluster refused the job array: Memory specification can not be satisfied; Batch job submission "
        "failed: Requested node configuration is not available. The request: hydra.launcher.mem_gb=64, "
        "hydra.launcher.cpus_per_task=8, hydra.launcher.gpus_per_node=null"
    )
    assert "hydra.launcher.partition=gpu" in refusal_message("Invalid partition name specified", {"partition": "gpu"})


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_search_space_and_direction(mode: str, direction: str) -> None:
    cfg = compose_hydra("hparams_search=optuna", f"monitor_mode={mode}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == direction and sweeper.storage is None
    assert set(sweeper.params) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "model.head.dropout",
        "model.head.hidden_dim",
        "augment",
    }
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def test_optuna_smoke_three_trials_each_cross_validated_on_two_folds(tmp_path, cache_dir) -> None:
    sweep_dir = tmp_path / "study"
    result = run_train(
        ["hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep_dir}", "data.fold=[0,1]", *TINY],
        cache_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = job_records(sweep_dir)
    values = [r["return_value"] for r in records]
    assert len(records) == 3 and all(0.0 <= v <= 1.0 for v in values)
    for record in records:  # each trial's objective is the mean of its folds' monitored metric
        trial = sweep_dir / str(record["job_num"])
        folds = [json.loads((trial / f"fold{k}" / "metrics.json").read_text())["metrics"] for k in (0, 1)]
        assert record["return_value"] == pytest.approx(sum(f["val/auc_macro"] for f in folds) / 2, abs=1e-12)
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best["best_value"] == max(values)  # the monitored metric each trial returned, maximised
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    assert report["sweeper"] == "OptunaSweeper" and report["counts"]["completed"] == 3
    assert report["optuna"]["best_value"] == best["best_value"]


@pytest.mark.slow
def test_ddp_trains_with_two_cpu_processes(tmp_path, cache_dir) -> None:
    run_dir = tmp_path / "run"
    result = run_train(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.sync_batchnorm=false",  # SyncBatchNorm needs GPUs
            "trainer.precision=32-true",
            f"hydra.run.dir={run_dir}",
            *TINY,
        ],
        cache_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "train_ddp_process_1.log").exists()  # Lightning started the second rank
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    record = json.loads((run_dir / JOB_RECORD).read_text())
    assert record["status"] == "completed"
