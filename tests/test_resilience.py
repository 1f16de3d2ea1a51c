"""Runs survive kill -9 and pre-emption signals, resume exactly, and never overwrite a finished run.

The interrupted legs run the real command in a subprocess where a signal must come from outside (kill -9, a
scheduler's SIGTERM); SIGTERM/SIGUSR1 are also sent by the training process to itself, which is fast enough for
the default run. Every run uses one intra-op thread (OMP_NUM_THREADS=1 in the subprocesses), so in-process and
subprocess legs do the same arithmetic; a tiny timm test network keeps each run to seconds. Same seed, same folds
is tested in test_folds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict
from pytorch_lightning.loggers import CSVLogger

from melanoma_lit.callbacks.resilience import keep_csv_history
from melanoma_lit.callbacks.throughput import ELAPSED_SECONDS
from melanoma_lit.data.locks import OWNER_SUFFIX
from melanoma_lit.data.sampling import EpochSampler
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.runs.files import METRICS_FILE, finished_metrics, resolve_resume
from melanoma_lit.runs.hydra_callbacks import JOB_RECORD, RUN_LOCK
from melanoma_lit.train import build_datamodule, cross_validate, train
from tests.checkpoints import train_tiny_checkpoint
from tests.conftest import REPO_ROOT, SMALL_SYNTHETIC

# 77 training images in batches of 16 (the last dropped): 4 steps per epoch, 12 in all.
STEPS_PER_EPOCH, EPOCHS = 4, 3
TINY = (
    "backbone.name=test_resnet",
    "data.input_size=32",
    "model.channels_last=false",
    "data.num_workers=0",
    "data.batch_size=16",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "scheduler.patience=0",  # the plateau scheduler acts every epoch, so a resume must restore it exactly
)
FAST = (*SMALL_SYNTHETIC, *TINY)
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SignalAt(pl.Callback):
    """Sends ``signum`` to this process once ``step`` optimizer steps are done, as a scheduler would (only in the
    run writing to ``run_dir`` when given); ``workers_too``: first to its loader workers, as SLURM signals every
    process of a job step."""

    def __init__(self, signum: int, step: int, run_dir: str | None = None, workers_too: bool = False) -> None:
        self.signum, self.step, self.run_dir, self.workers_too = signum, step, run_dir, workers_too

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and self.run_dir in (None, trainer.default_root_dir):
            workers = multiprocessing.active_children() if self.workers_too else []
            assert workers or not self.workers_too, "no loader workers to signal"
            for process in [*workers, multiprocessing.current_process()]:
                os.kill(process.pid, self.signum)


class ExitAt(pl.Callback):
    """Ends the process as submitit does when it has requeued a job at its time limit (``sys.exit`` from a signal
    handler, no checkpoint), at the start of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.current_epoch == self.epoch:
            raise SystemExit(-1)


class TimeLimitHandler:
    """Does what submitit's SIGUSR2 handler does at a SLURM job's time limit, where the signal lands: requeue the
    job (here: note the step of ``checkpoint`` at that moment) and ``sys.exit(-1)``."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.checkpoint_steps: list[int | None] = []

    def __call__(self, signum: int, frame: object) -> None:
        self.checkpoint_steps.append(_checkpoint_step(self.checkpoint) if self.checkpoint.exists() else None)
        sys.exit(-1)


class CtrlCTwiceAt(pl.Callback):
    """Two Ctrl-C in a row after ``step`` optimizer steps: the second one raises KeyboardInterrupt there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


def _command(run_dir: Path, cache_dir: Path) -> list[str]:
    """What a cluster job script runs, unchanged on every requeue."""
    train_command = [sys.executable, "-m", "melanoma_lit.train", *FAST]
    return [*train_command, f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache_dir}", "ckpt_path=last"]


def _history(run_dir: Path) -> pd.DataFrame:
    """csv/metrics.csv without the wall-clock column, the one value a resumed run cannot repeat."""
    return pd.read_csv(run_dir / "csv" / "metrics.csv").drop(columns=ELAPSED_SECONDS)


def _epochs_ended(run_dir: Path) -> list[int]:
    """Epochs whose training loss reached csv/metrics.csv on disk (read while a run may be writing it)."""
    try:
        with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
            return [int(row["epoch"]) for row in csv.DictReader(handle) if row.get("train/loss_epoch")]
    except (OSError, KeyError, ValueError):
        return []


def _checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"]


def _wait_for(
    process: subprocess.Popen,
    condition: Callable[[], bool],
    what: str,
    timeout: float = 300,
    output: Callable[[], str] | None = None,
) -> None:
    """Until ``condition``, failing if ``process`` exits first (with its stderr, or ``output()``) or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            said = (output or process.stderr.read)()[-3000:]
            pytest.fail(f"the command exited with {process.returncode} before {what}: {said}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.02)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with a digest of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _same_metrics(resumed: dict[str, float], reference: dict[str, float]) -> None:
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


# ---------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("signum", "loader"),
    [
        (signal.SIGTERM, ()),
        (signal.SIGUSR1, ()),
        (signal.SIGTERM, ("data.num_workers=2", "data.persistent_workers=true", "data.balanced_sampler=true")),
    ],
    ids=["SIGTERM", "SIGUSR1", "SIGTERM-workers-balanced"],
)
def test_a_run_stopped_mid_epoch_resumes_and_ends_exactly_as_the_uninterrupted_run(
    compose_train, tmp_path, signum, loader
) -> None:
    """The same batches, augmentations, dropout, learning rates and epoch means after the restart (data.sampling,
    ResumeState), also with loader workers and the class-balanced draw."""
    reference = train(compose_train(*FAST, *loader))
    uninterrupted = tmp_path / "uninterrupted"
    os.replace(tmp_path / "run", uninterrupted)
    cfg = compose_train(*FAST, *loader, "ckpt_path=last")
    stop_at = STEPS_PER_EPOCH + 2  # two batches into the second epoch
    with open_dict(cfg):
        cfg.callbacks.signal_at = {"_target_": f"{__name__}.SignalAt", "signum": int(signum), "step": stop_at}
    run = tmp_path / "run"

    with pytest.raises(SystemExit) as stopped:
        train(cfg)

    assert stopped.value.code == 128 + signum  # what a shell reports for a process the signal ended
    assert _checkpoint_step(run / "checkpoints" / "last.ckpt") == stop_at
    assert not (run / METRICS_FILE).exists()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handler is the test process's again

    metrics = train(cfg)  # the requeued job: the same command

    assert _checkpoint_step(run / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH * EPOCHS  # no step lost or repeated
    assert _epochs_ended(run) == list(range(EPOCHS))
    assert finished_metrics(run) == pytest.approx(metrics, nan_ok=True)
    _same_metrics(metrics, reference)
    pd.testing.assert_frame_equal(_history(run), _history(uninterrupted), rtol=0, atol=1e-6)
    elapsed = pd.read_csv(run / "csv" / "metrics.csv")[ELAPSED_SECONDS].dropna()  # the clock goes on from the save
    assert len(elapsed) == EPOCHS and elapsed.is_monotonic_increasing and elapsed.iloc[0] > 0
    assert (run / "config.yaml").exists() and (run / "config.resume-1.yaml").exists()


def test_a_run_resumed_mid_epoch_and_stopped_again_from_its_next_epoch_end_still_ends_exactly(
    compose_train, tmp_path
) -> None:
    """The second restart starts from the epoch-end checkpoint the first restart wrote (a SLURM job requeued on
    pre-emption, then at its time limit): the restarted epoch's schedulers step once, after that checkpoint."""
    reference = train(compose_train(*FAST))
    os.replace(tmp_path / "run", tmp_path / "uninterrupted")
    stops = [
        {"_target_": f"{__name__}.SignalAt", "signum": int(signal.SIGTERM), "step": STEPS_PER_EPOCH + 2},
        {"_target_": f"{__name__}.ExitAt", "epoch": 2},
    ]
    for stop in stops:
        cfg = compose_train(*FAST, "ckpt_path=last")
        with open_dict(cfg):
            cfg.callbacks.stop = stop
        with pytest.raises(SystemExit):
            train(cfg)
    assert _checkpoint_step(tmp_path / "run" / "checkpoints" / "last.ckpt") == 2 * STEPS_PER_EPOCH

    _same_metrics(train(compose_train(*FAST, "ckpt_path=last")), reference)
    pd.testing.assert_frame_equal(_history(tmp_path / "run"), _history(tmp_path / "uninterrupted"), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "loader", [("data.num_workers=0",), ("data.num_workers=2", "data.persistent_workers=true")], ids=["main", "workers"]
)
def test_the_schedulers_time_limit_handler_runs_after_the_checkpoint_at_the_batchs_end(
    compose_train, tmp_path, loader
) -> None:
    """SIGUSR2 held by submitit (requeue and exit): run where it lands, its exit could fall inside an optimizer step.
    SignalCheckpoint finishes the batch, writes last.ckpt, then hands the signal over; the requeued run ends exactly
    as the uninterrupted one. Loader workers get the signal too (SLURM signals the whole job step) and leave it to
    the main process: the validation workers, started before training, hold submitit's handler."""
    reference = train(compose_train(*FAST, *loader))
    os.replace(tmp_path / "run", tmp_path / "uninterrupted")
    run, stop_at = tmp_path / "run", STEPS_PER_EPOCH + 2
    time_limit = TimeLimitHandler(run / "checkpoints" / "last.ckpt")
    cfg = compose_train(*FAST, *loader, "ckpt_path=last")
    with open_dict(cfg):
        cfg.callbacks.signal_at = {
            "_target_": f"{__name__}.SignalAt",
            "signum": int(signal.SIGUSR2),
            "step": stop_at,
            "workers_too": "data.num_workers=2" in loader,
        }
    held = signal.signal(signal.SIGUSR2, time_limit)
    try:
        with pytest.raises(SystemExit) as stopped:
            train(cfg)
        assert signal.getsignal(signal.SIGUSR2) is time_limit  # the job's handler again
    finally:
        signal.signal(signal.SIGUSR2, held)

    assert stopped.value.code == -1 and time_limit.checkpoint_steps == [stop_at]
    _same_metrics(train(compose_train(*FAST, *loader, "ckpt_path=last")), reference)
    pd.testing.assert_frame_equal(_history(run), _history(tmp_path / "uninterrupted"), rtol=0, atol=1e-6)


def test_a_second_ctrl_c_stops_without_a_checkpoint_from_the_middle_of_a_batch(compose_train, tmp_path) -> None:
    """The KeyboardInterrupt of a second Ctrl-C lands anywhere, maybe inside an optimizer step: last.ckpt stays the
    one written at the last epoch's end, as the first Ctrl-C's warning says."""
    cfg = compose_train(*FAST, "ckpt_path=last")
    with open_dict(cfg):
        cfg.callbacks.ctrl_c = {"_target_": f"{__name__}.CtrlCTwiceAt", "step": STEPS_PER_EPOCH + 2}

    with pytest.raises(KeyboardInterrupt):
        train(cfg)

    assert _checkpoint_step(tmp_path / "run" / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_last_ckpt_is_written_at_every_epoch_end_also_when_the_monitor_does_not_improve(compose_train, tmp_path):
    """Lightning's own save_last writes last.ckpt only in epochs that improve the monitor (EpochCheckpoint writes
    it every epoch), so a kill repeats at most the interrupted epoch."""
    train(compose_train(*FAST, "monitor=val/loss", "monitor_mode=max"))  # the loss falls: improves only at first
    assert _checkpoint_step(tmp_path / "run" / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH * EPOCHS
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert _checkpoint_step(tmp_path / "run" / "checkpoints" / "best.ckpt") == STEPS_PER_EPOCH


def test_a_cross_validation_job_resumes_in_the_fold_it_was_stopped_in(compose_train, tmp_path) -> None:
    run = tmp_path / "run"
    cfg = compose_train(*FAST, "trainer.max_epochs=1", "data.fold=[0,1]", "ckpt_path=last")
    with open_dict(cfg):
        target = f"{__name__}.SignalAt"
        cfg.callbacks.signal_at = {"_target_": target, "signum": signal.SIGTERM, "step": 2, "run_dir": f"{run}/fold1"}
    with pytest.raises(SystemExit):
        cross_validate(cfg)
    first_fold = _snapshot(run / "fold0")
    assert (run / "fold0" / METRICS_FILE).exists() and not (run / "fold1" / METRICS_FILE).exists()

    mean = cross_validate(cfg)  # the requeued job

    assert _snapshot(run / "fold0") == first_fold  # the finished fold is not trained or written again
    assert _checkpoint_step(run / "fold1" / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH
    assert not list(run.rglob("last-v*.ckpt"))  # the next last.ckpt replaced the one the signal wrote
    assert set(json.loads((run / METRICS_FILE).read_text())["per_fold"]) == {"0", "1"}
    assert cross_validate(cfg) == pytest.approx(mean, nan_ok=True)  # once finished, a rerun only reads


@pytest.mark.slow
def test_kill_9_then_the_same_command_ends_exactly_as_the_uninterrupted_run(compose_train, tmp_path, cache_dir) -> None:
    reference = train(compose_train(*FAST))
    uninterrupted = tmp_path / "uninterrupted"
    os.replace(tmp_path / "run", uninterrupted)
    run = tmp_path / "run"

    process = subprocess.Popen(_command(run, cache_dir), cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True)
    _wait_for(process, lambda: _epochs_ended(run) == [0], "the first epoch's end")
    process.kill()  # SIGKILL: no handler runs, nothing is flushed
    process.wait()
    assert not (run / METRICS_FILE).exists(), "the run finished before it was killed"
    assert _checkpoint_step(run / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH

    resumed = subprocess.run(_command(run, cache_dir), cwd=tmp_path, env=ENV, capture_output=True, text=True)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_metrics(finished_metrics(run), reference)
    pd.testing.assert_frame_equal(_history(run), _history(uninterrupted), rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "val_predictions.csv"), pd.read_csv(uninterrupted / "val_predictions.csv"), atol=1e-6
    )
    assert (run / ".hydra" / "config.yaml").exists() and (run / ".hydra" / "resume-1" / "config.yaml").exists()

    finished, record = _snapshot(run), json.loads((run / JOB_RECORD).read_text())
    again = subprocess.run(_command(run, cache_dir), cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    changed = {name for name, digest in _snapshot(run).items() if finished.get(name) != digest}
    # the log is appended to; the job record keeps the earlier ones; the run lock names its new holder
    assert changed == {"train.log", JOB_RECORD, RUN_LOCK + OWNER_SUFFIX}
    earlier = record.pop("attempts")
    assert [attempt["status"] for attempt in earlier] == ["interrupted"]  # the killed start, left as it was
    assert json.loads((run / JOB_RECORD).read_text())["attempts"] == [*earlier, record]


@pytest.mark.slow
def test_sigterm_to_the_command_saves_exits_143_and_the_requeued_command_resumes(tmp_path, cache_dir) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen(_command(run, cache_dir), cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True)
    _wait_for(process, lambda: _epochs_ended(run) == [0], "the first epoch's end")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGTERM: saved" in (run / "train.log").read_text() and "Traceback" not in stderr
    assert STEPS_PER_EPOCH <= _checkpoint_step(run / "checkpoints" / "last.ckpt") < STEPS_PER_EPOCH * EPOCHS

    requeued = subprocess.run(_command(run, cache_dir), cwd=tmp_path, env=ENV, capture_output=True, text=True)

    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert _epochs_ended(run) == list(range(EPOCHS))
    assert _checkpoint_step(run / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH * EPOCHS
    assert 0 <= finished_metrics(run)["val/auc_macro"] <= 1


# ----------------------------------------------------------------------------------- finished runs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A finished one-epoch run (checkpoints, metrics.json, predictions, CSV history)."""
    base = tmp_path_factory.mktemp("finished")
    return train_tiny_checkpoint(base, cache_dir, *TINY, "trainer.max_epochs=1")


def test_a_finished_run_is_never_written_to_again(compose_train, finished_run: Path) -> None:
    before = _snapshot(finished_run)

    def in_finished_run(*overrides: str):
        cfg = compose_train(*FAST, "trainer.max_epochs=1", *overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(finished_run)
        return cfg

    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoints/best\.ckpt.*default.*ckpt_path=last"):
        train(in_finished_run())
    with pytest.raises(ConfigError, match=r"holds a finished run \(metrics\.json\).*new folder"):
        train(in_finished_run(f"ckpt_path={finished_run / 'checkpoints' / 'last.ckpt'}"))
    assert train(in_finished_run("ckpt_path=last")) == pytest.approx(finished_metrics(finished_run), nan_ok=True)
    assert _snapshot(finished_run) == before


@pytest.mark.parametrize("command", ["train", "explain"])
def test_every_command_refuses_a_run_dir_that_holds_a_run(tmp_path, finished_run: Path, command: str) -> None:
    before = _snapshot(finished_run)
    result = subprocess.run(
        [sys.executable, "-m", f"melanoma_lit.{command}", f"hydra.run.dir={finished_run}"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert f"Error: {finished_run} already holds a run" in result.stderr and "Traceback" not in result.stderr
    assert _snapshot(finished_run) == before  # not even .hydra/ or a log file


def _checkpoint(path: Path, step: int, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "loops": {}, "global_step": step}, path)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_ckpt_path_last_takes_the_newest_readable_checkpoint_and_deletes_nothing(tmp_path, caplog) -> None:
    checkpoints = tmp_path / "checkpoints"
    assert resolve_resume(tmp_path, checkpoints, "last") is None  # nothing yet: a fresh start
    last = _checkpoint(checkpoints / "last.ckpt", 4, age=30)
    hpc = _checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 6, age=20)  # Lightning's own on SLURM's requeue signal
    assert resolve_resume(tmp_path, checkpoints, "last") == str(hpc)

    cut = checkpoints / "last-v1.ckpt"  # newest, but cut short (a kill during a copy across file systems)
    cut.write_bytes(last.read_bytes()[:200])
    assert resolve_resume(tmp_path, checkpoints, "last") == str(hpc)
    assert "last-v1.ckpt: cannot resume from it" in caplog.text and cut.exists()

    hpc.write_bytes(b"")
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"none of \['hpc_ckpt_1\.ckpt', 'last-v1\.ckpt', 'last\.ckpt'\].*Move them"):
        resolve_resume(tmp_path, checkpoints, "last")
    with pytest.raises(DataError, match=rf"ckpt_path={cut}: cannot resume from it"):
        resolve_resume(tmp_path / "elsewhere", checkpoints, str(cut))
    with pytest.raises(ConfigError, match=r"ckpt_path=.*absent\.ckpt: file not found"):
        resolve_resume(tmp_path / "elsewhere", checkpoints, str(tmp_path / "absent.ckpt"))
    assert sorted(path.name for path in tmp_path.rglob("*.ckpt")) == ["hpc_ckpt_1.ckpt", "last-v1.ckpt", "last.ckpt"]


def test_the_csv_history_survives_a_kill_while_a_resume_rewrites_it(tmp_path) -> None:
    """Lightning's CSV writer deletes metrics.csv as it starts; the rows wait beside it until written again."""
    logger = CSVLogger(tmp_path, name="csv", version="")
    folder = Path(logger.log_dir)
    folder.mkdir(parents=True)
    (folder / "metrics.csv.before-resume").write_text("epoch,step,train/loss_epoch\n0,3,0.5\n1,7,0.25\n")
    keep_csv_history([logger], _checkpoint(tmp_path / "last.ckpt", step=4))
    assert pd.read_csv(folder / "metrics.csv").to_dict("records") == [{"epoch": 0, "step": 3, "train/loss_epoch": 0.5}]
    assert not (folder / "metrics.csv.before-resume").exists()


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_same_metrics_and_history(compose_train, tmp_path) -> None:
    first = train(compose_train(*FAST, "trainer.max_epochs=2"))
    history = _history(tmp_path / "run")
    os.replace(tmp_path / "run", tmp_path / "first")
    second = train(compose_train(*FAST, "trainer.max_epochs=2"))
    _same_metrics(second, first)
    pd.testing.assert_frame_equal(_history(tmp_path / "run"), history, rtol=0, atol=1e-6)


def test_the_training_order_depends_on_seed_and_epoch_only_and_resumes_part_way() -> None:
    order = EpochSampler(10, seed=3).order(epoch=1)
    assert sorted(row for row, _ in order) == list(range(10))  # a permutation, each row with its augmentation seed
    assert EpochSampler(10, seed=3).order(1) == order
    assert EpochSampler(10, seed=3).order(2) != order and EpochSampler(10, seed=4).order(1) != order
    torch.manual_seed(0)
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) == order  # the global RNG plays no part
    sampler.resume(1, start=4)
    assert list(sampler) == order[4:] and list(sampler) == order  # skipped once, for that epoch
    balanced = EpochSampler(10, seed=3, weights=[1.0] * 9 + [100.0]).order(0)
    assert sum(row == 9 for row, _ in balanced) > 5  # weighted, with replacement


def test_ddp_ranks_share_each_step_of_the_single_process_order() -> None:
    """Two ranks with half the batch each train, step by step, on the batch one process would train on."""
    single = list(EpochSampler(12, seed=5, num_replicas=1, rank=0))
    ranks = [list(EpochSampler(12, seed=5, num_replicas=2, rank=rank)) for rank in (0, 1)]
    for step in range(3):
        together = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert sorted(together) == sorted(single[4 * step : 4 * step + 4])


def _first_epoch(compose_train, seed: int, *overrides: str) -> tuple[list[int], torch.Tensor]:
    """The image indices and augmented pixels of one training epoch, seeded as train() seeds it."""
    cfg = compose_train(*SMALL_SYNTHETIC, "data.input_size=32", "data.batch_size=16", "augment=strong", *overrides)
    pl.seed_everything(seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    batches = [  # with the photometric augmentation the device applies after the transfer
        datamodule.on_after_batch_transfer(datamodule.on_before_batch_transfer(batch, 0), 0)
        for batch in datamodule.train_dataloader()
    ]
    return torch.cat([batch["index"] for batch in batches]).tolist(), torch.cat([batch["image"] for batch in batches])


@pytest.mark.parametrize("sampler", ["data.balanced_sampler=false", "data.balanced_sampler=true"])
def test_same_seed_same_sampling_order_and_augmentations_in_workers(compose_train, sampler: str) -> None:
    workers = ("data.num_workers=2", "data.persistent_workers=false", sampler)
    order, images = _first_epoch(compose_train, 42, *workers)
    again_order, again_images = _first_epoch(compose_train, 42, *workers)
    other_order, other_images = _first_epoch(compose_train, 7, *workers)
    assert order == again_order and torch.equal(images, again_images)
    assert order != other_order and not torch.equal(images, other_images)
