"""Trackers: an offline W&B run, an MLflow store and TensorBoard events of a real tracked run, read back; a run
logged to a real MLflow tracking server on the loopback interface, read back through its client API."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wandb
from PIL import Image
from wandb.proto import wandb_internal_pb2

from melanoma_lit import loggers
from melanoma_lit.callbacks.media import ValidationOutputs, worst_errors
from melanoma_lit.loggers import WandbRunLogger, wandb_mode
from melanoma_lit.metrics.plots import plot_pr_curves
from melanoma_lit.train import train
from tests.conftest import SMALL_SYNTHETIC, run_command

EPOCHS = 3
TABLE_ROWS = 6
GRADCAM = 2
# every_n_epochs=2 logs media after epoch index 1 during training and epoch 2 (the last) when training ends.
MEDIA_EPOCHS = (1, 2)


@pytest.fixture
def no_wandb_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key, no ~/.netrc, no WANDB_MODE: the automatic decision runs; W&B's own folders in tmp_path."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setattr(loggers, "_announced", set())


def test_tracked_run_is_readable_from_wandb_mlflow_and_tensorboard(
    compose_train, tmp_path: Path, no_wandb_credentials: None, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_train(
        "debug=limit",
        "data.input_size=64",
        *SMALL_SYNTHETIC,
        f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "logger=[csv,tensorboard,wandb,mlflow]",
        "logger.wandb.log_model=true",
        "callbacks.early_stopping=null",
        "callbacks.media.every_n_epochs=2",
        f"callbacks.media.table_rows={TABLE_ROWS}",
        f"callbacks.media.gradcam={GRADCAM}",
    )
    with caplog.at_level(logging.WARNING, logger="melanoma_lit.loggers"):
        train(cfg)
    wandb.finish()  # the process would end here; in a sweep the next job's logger closes it
    # finish() returns once the run's exit is acknowledged, while W&B's service process may still be writing and
    # closing run-*.wandb and files/: reading them then was the flake (2 in 13 on a busy machine). teardown() asks
    # the service to shut down and waits for the process to exit, so every file is whole when read (the atexit
    # hook does the same when a real command ends).
    wandb.teardown()
    run = tmp_path / "run"
    assert [r.getMessage() for r in caplog.records if "W&B logs offline" in r.getMessage()] == [
        "W&B logs offline: no W&B API key (set WANDB_API_KEY or run `wandb login`). "
        "Upload later with `wandb sync <run dir>/wandb/offline-run-*`."
    ]
    wandb_table = check_wandb_run(run)
    mlflow_table = check_mlflow_run(run)
    assert mlflow_table["image_id"].tolist() == wandb_table["image_id"].tolist()
    np.testing.assert_allclose(mlflow_table["loss"], wandb_table["loss"], atol=1e-5)
    check_tensorboard(run)


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Decode W&B's transaction log: a 7-byte header, then LevelDB-log framing in 32 KiB blocks of records
    (crc32, length, type; FULL=1 or FIRST=2, MIDDLE=3, LAST=4 pieces), each a wandb protobuf Record."""
    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    records, pending, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (kind == 0 and length == 0):
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def check_wandb_run(run: Path) -> pd.DataFrame:
    """Run identity, full config, per-epoch metrics, media files, sample table, checkpoint artifact."""
    (folder,) = (run / "wandb").glob("offline-run-*")
    records = wandb_records(next(folder.glob("run-*.wandb")))
    kinds = [record.WhichOneof("record_type") for record in records]
    (identity,) = [record.run for record in records if record.HasField("run")]
    assert (identity.display_name, identity.run_group, identity.job_type) == ("resnet18-fold0", "debug", "train")
    assert list(identity.tags) == ["synthetic", "resnet18"] and identity.project == "melanoma_lit"
    config = {item.key: json.loads(item.value_json) for item in identity.config.update}
    assert config["data"]["input_size"] == 64 and config["trainer"]["max_epochs"] == EPOCHS
    added = {item.key for record in records if record.HasField("config") for item in record.config.update}
    assert {"classes", "preprocessing"} <= added and "backbone" not in added  # the run's config wins
    rows = [
        {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.HasField("history")
    ]
    for key in ("val/auc_macro", "val/auc/MEL", "val/loss", "train/loss_epoch"):
        assert [row["epoch"] for row in rows if key in row] == list(range(EPOCHS)), key
    media_rows = [row for row in rows if "val/samples/path" in row]
    assert len(media_rows) == len(MEDIA_EPOCHS)
    files = folder / "files"
    for row in media_rows:
        for key in ("val/roc_curves", "val/pr_curves", "val/confusion_matrix", "val/reliability"):
            with Image.open(files / row[f"{key}/path"]) as image:
                assert image.format == "PNG" and image.size == (row[f"{key}/width"], row[f"{key}/height"])
    assert len(list((files / "media" / "images" / "val").glob("gradcam_*.png"))) == GRADCAM * len(MEDIA_EPOCHS)
    table = json.loads((files / media_rows[-1]["val/samples/path"]).read_text())
    assert table["columns"][:5] == ["thumbnail", "image_id", "true", "predicted", "loss"]
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    assert len(frame) == TABLE_ROWS and frame["loss"].is_monotonic_decreasing
    artifacts = [record.artifact for record in records if record.HasField("artifact")]
    tables = [a for a in artifacts if a.type == "run_table"]
    assert len(tables) == len(MEDIA_EPOCHS)
    thumbnails = [entry for entry in tables[-1].manifest.contents if entry.path.startswith("media/images/")]
    assert len(thumbnails) == TABLE_ROWS
    # best.ckpt when training ended, and again once its temperature was stored: the newer version holds it
    bests = [a for a in artifacts if a.type == "model" and "best" in a.aliases]
    assert len(bests) == 2
    for best in bests:
        assert json.loads(best.metadata)["original_filename"] == "best.ckpt"
        assert [entry.path for entry in best.manifest.contents] == ["model.ckpt"]
    assert kinds[-1] == "exit"
    return frame


def check_mlflow_run(run: Path) -> pd.DataFrame:
    """Params from the config and the model, per-epoch metric histories, plots and tables as artifacts."""
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{run / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("debug")
    (found,) = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    assert found.info.run_name == "resnet18-fold0" and found.info.status == "FINISHED"
    assert {"backbone": "resnet18", "fold": "0", "data": "synthetic"}.items() <= found.data.tags.items()
    params = found.data.params
    assert params["backbone/name"] == "resnet18" and params["data/input_size"] == "64"
    assert params["trainer/max_epochs"] == str(EPOCHS) and params["monitor"] == "val/auc_macro"
    assert "preprocessing/input_size" in params  # a model hyperparameter the config lacks
    for key in ("val/auc_macro", "val/auc/MEL", "train/loss_epoch"):
        history = client.get_metric_history(run_id, key)
        assert len(history) == EPOCHS and [m.step for m in history] == sorted(m.step for m in history), key
    assert [a.path for a in client.list_artifacts(run_id, "media")] == [f"media/epoch_{e:03d}" for e in MEDIA_EPOCHS]
    assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}
    local = Path(download_artifacts(run_id=run_id, artifact_path="media", tracking_uri=uri, dst_path=str(run / "dl")))
    last = local / f"epoch_{MEDIA_EPOCHS[-1]:03d}"
    assert sorted(p.name for p in last.iterdir()) == [
        "confusion.png",
        "gradcam",
        "pr.png",
        "reliability.png",
        "roc.png",
        "val_samples.csv",
    ]
    for png in [*last.glob("*.png"), *(last / "gradcam").glob("*.png")]:
        with Image.open(png) as image:
            image.verify()
    assert len(list((last / "gradcam").glob("*.png"))) == GRADCAM
    table = pd.read_csv(last / "val_samples.csv")
    assert len(table) == TABLE_ROWS and table["loss"].is_monotonic_decreasing
    return table


def check_tensorboard(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert len(events.Scalars("val/auc_macro")) == EPOCHS
    for name in ("roc_curves", "pr_curves", "confusion_matrix", "reliability"):
        logged = events.Images(f"val/{name}")
        assert len(logged) == len(MEDIA_EPOCHS), name
        with Image.open(io.BytesIO(logged[-1].encoded_image_string)) as image:
            assert image.format == "PNG" and image.size == (logged[-1].width, logged[-1].height)


def test_worst_errors_ranks_by_masked_loss() -> None:
    outputs = ValidationOutputs(
        epoch=0,
        index=np.array([2, 0, 3, 1]),
        probs=np.array([[0.9, 0.1], [0.2, 0.7], [0.5, 0.5], [0.1, 0.1]]),
        targets=np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=float),
        known=np.array([[1, 1], [1, 1], [1, 1], [0, 0]], dtype=float),
    )
    frame = worst_errors(outputs, ["MEL", "NV"], ["a", "b", "c", "d"])
    assert frame["image_id"].tolist() == ["a", "d", "c", "b"]  # losses 1.41, 0.69, 0.11, unknown
    assert frame["row"].tolist() == [0, 3, 2, 1]
    np.testing.assert_allclose(frame["loss"][:3], [-(np.log(0.2) + np.log(0.3)) / 2, np.log(2), -np.log(0.9)])
    assert np.isnan(frame["loss"][3])
    assert frame["true"].tolist() == ["MEL", "NV", "MEL", "-"]
    assert frame["predicted"].tolist() == ["NV", "MEL", "MEL", "MEL"]
    assert frame[["MEL", "NV"]].to_numpy()[0].tolist() == [0.2, 0.7]


def test_pr_curves_plot_names_classes_without_both_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    targets = np.stack([rng.integers(0, 2, 40), np.zeros(40)], axis=1)
    path = plot_pr_curves(rng.random((40, 2)), targets, np.ones((40, 2)), ["MEL", "DF"], tmp_path / "p" / "pr.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300


class _Listener:
    """A real TCP server on localhost that accepts connections, standing in for the W&B host."""

    def __enter__(self) -> str:
        self.socket = socket.create_server(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


def test_wandb_mode_decides_by_setting_key_and_network(
    no_wandb_credentials: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert wandb_mode(offline=True) == "offline" and wandb_mode(offline=False) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    with caplog.at_level(logging.WARNING, logger="melanoma_lit.loggers"):
        assert wandb_mode() == "offline" and wandb_mode() == "offline"
    assert len(caplog.records) == 1 and "no W&B API key" in caplog.records[0].getMessage()  # said once
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with _Listener() as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_BASE_URL", url)  # the listener is closed now: connection refused
    assert wandb_mode(timeout=1.0) == "offline"


def test_netrc_login_counts_as_a_key(no_wandb_credentials: None, tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1\n  login user\n  password " + "k" * 40 + "\n")
    (home / ".netrc").chmod(0o600)
    with _Listener() as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        assert wandb_mode() == "online"


def test_a_new_wandb_logger_closes_the_previous_run(no_wandb_credentials: None, tmp_path: Path) -> None:
    """Hydra's basic launcher runs a sweep's jobs in one process: each job must get its own W&B run."""
    first = WandbRunLogger(save_dir=str(tmp_path), project="t", offline=True)
    first_id = first.experiment.id
    second = WandbRunLogger(save_dir=str(tmp_path), project="t", offline=True)
    assert wandb.run is None
    assert second.experiment.id != first_id
    wandb.finish()
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2


# ------------------------------------------------------------------------------ a real MLflow server

SERVER_START_S = 120  # an MLflow server starts in 5-30 s on a busy 2-core machine


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """``mlflow server`` on a free loopback port with its own SQLite store and proxied artifact folder; stopped (its
    process group, which the server's workers belong to) when the test ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = tmp_path / "mlflow-server"
    root.mkdir()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
        f"--artifacts-destination={root / 'artifacts'}",
        "--serve-artifacts",
        "--workers=1",
    ]
    url = f"http://127.0.0.1:{port}"
    with (root / "server.log").open("w") as log:
        server = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up on {url}: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, root
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_a_run_logs_to_a_real_mlflow_tracking_server(tmp_path: Path, cache_dir: Path, mlflow_server) -> None:
    """Params, per-epoch metrics and artifacts go over HTTP to the server (artifacts through its proxy, none in the
    run folder) and come back through the server's client API."""
    from mlflow.tracking import MlflowClient

    url, root = mlflow_server
    run = tmp_path / "run"
    result = run_command(
        "train",
        "debug=limit",
        *SMALL_SYNTHETIC,
        "data.input_size=32",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "logger=[csv,mlflow]",
        f"logger.mlflow.tracking_uri={url}",
        "logger.mlflow.artifact_location=null",  # the server's: mlflow-artifacts:/ through its proxy
        "callbacks.media.table_rows=4",
        "callbacks.media.gradcam=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        MELANOMA_LIT_CACHE=str(cache_dir),
        NO_PROXY="127.0.0.1,localhost",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(tracking_uri=url)
    (found,) = client.search_runs([client.get_experiment_by_name("debug").experiment_id])
    assert found.info.run_name == "resnet18-fold0" and found.info.status == "FINISHED"
    assert found.info.artifact_uri.startswith("mlflow-artifacts:/")
    params = found.data.params
    assert params["backbone/name"] == "resnet18" and params["data/input_size"] == "32"
    assert params["trainer/max_epochs"] == "2" and params["logger/mlflow/tracking_uri"] == url
    for key in ("val/auc_macro", "val/loss", "train/loss_epoch"):
        assert len(client.get_metric_history(found.info.run_id, key)) == 2, key
    final = json.loads((run / "metrics.json").read_text())["metrics"]["val/auc_macro"]
    assert 0.0 <= found.data.metrics["val/auc_macro"] <= 1.0 and 0.0 <= final <= 1.0
    assert "config.yaml" in {artifact.path for artifact in client.list_artifacts(found.info.run_id)}
    local = Path(client.download_artifacts(found.info.run_id, "media", str(tmp_path / "download")))
    (epoch,) = sorted(local.iterdir())
    assert len(pd.read_csv(epoch / "val_samples.csv")) == 4 and len(list((epoch / "gradcam").glob("*.png"))) == 1
    assert list((root / "artifacts").rglob("val_samples.csv"))  # stored by the server, not in the run folder
    assert not (run / "mlflow.db").exists() and not (run / "mlartifacts").exists()
