"""End-to-end training through the real configs: every backbone wires up, and a run leaves its outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.train import build_datamodule, build_model, cross_validate, train
from tests.conftest import SMALL_SYNTHETIC, run_command

# The three large backbones cost ~20 s each on 2 CPU cores: they run in `make test-full`.
BACKBONES = [
    "resnet18",
    "inception_v3",
    pytest.param("resnet152", marks=pytest.mark.slow),
    pytest.param("densenet201", marks=pytest.mark.slow),
    pytest.param("inception_resnet_v2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fast_dev_run_at_native_size(compose_train, backbone: str) -> None:
    cfg = compose_train(f"backbone={backbone}", "debug=fast_dev_run", "data.batch_size=2", *SMALL_SYNTHETIC)
    assert train(cfg) == {}


def test_the_command_shows_no_lightning_advertisement(tmp_path: Path, cache_dir: Path) -> None:
    """The command as a user runs it: no "💡 Tip: ... litlogger" line on the console or in train.log."""
    run = tmp_path / "run"
    overrides = [
        "debug=fast_dev_run",
        "trainer.accelerator=cpu",
        "backbone.name=test_resnet",
        "data.input_size=32",
        "model.channels_last=false",
        "data.num_workers=0",
        "data.batch_size=4",
        *SMALL_SYNTHETIC,
        f"hydra.run.dir={run}",
        f"paths.cache_dir={cache_dir}",
    ]
    result = run_command("train", *overrides, cwd=tmp_path, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr + (run / "train.log").read_text()
    assert "Running in `fast_dev_run` mode" in output  # Lightning's other lines still come through
    assert "Tip:" not in output and "litlogger" not in output


def test_limited_run_writes_every_output(compose_train, tmp_path) -> None:
    cfg = compose_train("debug=limit", "data.input_size=64", *SMALL_SYNTHETIC)
    metrics = train(cfg)
    run = tmp_path / "run"
    assert (run / "config.yaml").exists()
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    history = pd.read_csv(run / "csv" / "metrics.csv")
    assert {"train/loss_epoch", "val/auc_macro", "val/loss"} <= set(history.columns)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["metrics"] == {k: None if math.isnan(v) else v for k, v in metrics.items()}
    assert 0.0 <= metrics["val/auc_macro"] <= 1.0
    predictions = pd.read_csv(run / "val_predictions.csv")
    assert list(predictions.columns[: 1 + len(ISIC_CLASSES)]) == ["image", *ISIC_CLASSES]
    assert 0 < len(predictions) <= summary["data"]["val"] and predictions["image"].is_unique
    assert predictions[list(ISIC_CLASSES)].stack().between(0, 1).all()


def test_a_list_of_folds_cross_validates_inside_one_job(compose_train, tmp_path) -> None:
    cfg = compose_train("debug=limit", "data.input_size=32", "data.num_folds=3", "data.fold=[0,2]", *SMALL_SYNTHETIC)
    mean = cross_validate(cfg)
    run = tmp_path / "run"
    folds = {k: json.loads((run / f"fold{k}" / "metrics.json").read_text()) for k in (0, 2)}
    assert [summary["fold"] for summary in folds.values()] == [0, 2]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["fold"] == [0, 2] and set(summary["per_fold"]) == {"0", "2"}
    for key in ("val/auc_macro", "val/decided_balanced_accuracy"):
        values = [folds[k]["metrics"][key] for k in (0, 2)]
        assert mean[key] == pytest.approx(sum(values) / 2) and summary["metrics"][key] == pytest.approx(mean[key])
        assert summary["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2)
    out_of_fold = pd.read_csv(run / "val_predictions.csv")
    parts = [pd.read_csv(run / f"fold{k}" / "val_predictions.csv") for k in (0, 2)]
    assert out_of_fold["image"].is_unique and len(out_of_fold) == sum(len(part) for part in parts)
    assert sorted(out_of_fold["fold"].unique()) == [0, 2]


def test_balanced_pos_weight_is_counted_on_the_training_fold_and_kept_in_the_checkpoint(
    compose_train, tmp_path
) -> None:
    overrides = ("debug=limit", "data.input_size=32", "trainer.limit_train_batches=1", *SMALL_SYNTHETIC)
    cfg = compose_train(*overrides, "model.loss.pos_weight=balanced")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    expected = torch.as_tensor(datamodule.positive_weights(), dtype=torch.float32)
    assert len(expected) == len(ISIC_CLASSES) and not torch.all(expected == 1)
    train(cfg)
    restored = LesionClassifier.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(restored.criterion.pos_weight, expected)  # rebuilt without the config
    assert build_model(compose_train(*overrides), datamodule).criterion.pos_weight is None  # default: unweighted
    for bad in ("true", "[1.0,2.0]"):
        with pytest.raises(ConfigError, match=r"model\.loss\.pos_weight=.*balanced"):
            build_model(compose_train(*overrides, f"model.loss.pos_weight={bad}"), datamodule)


def test_resnet18_learns_the_synthetic_lesions(compose_train) -> None:
    """The synthetic classes carry real visual signal and the whole pipeline learns it (small budget)."""
    cfg = compose_train(
        "experiment=demo",
        "data.synthetic.n=800",
        "data.synthetic.size=64",
        "data.input_size=64",
        "data.num_workers=0",
        "data.batch_size=32",
        "trainer.max_epochs=3",
    )
    metrics = train(cfg)
    assert metrics["val/auc_macro"] >= 0.90


@pytest.mark.parametrize(
    ("data", "folder"), [("isic2017", "isic2017"), ("isic2018", "isic2018"), ("folder", "folder_9class")]
)
def test_real_data_smoke_run(compose_train, shared_data, tmp_path, data: str, folder: str) -> None:
    cfg = compose_train(f"data={data}", f"data.root={shared_data / folder}", "debug=limit", "data.input_size=64")
    metrics = train(cfg)
    assert 0.0 <= metrics["val/auc_macro"] <= 1.0
    assert len(pd.read_csv(tmp_path / "run" / "val_predictions.csv")) == 4 * cfg.data.batch_size


@pytest.mark.slow
def test_compiled_model_trains_and_its_checkpoint_loads_uncompiled(compose_train, tmp_path) -> None:
    cfg = compose_train("debug=limit", "model.compile=true", "data.input_size=32", *SMALL_SYNTHETIC)
    metrics = train(cfg)
    assert 0.0 <= metrics["val/auc_macro"] <= 1.0
    restored = LesionClassifier.from_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert all(not key.startswith("_orig_mod") for key in restored.net.state_dict())
