"""export: ONNX (onnxruntime) and TorchScript outputs equal the checkpoint's; preprocessing.json says how to feed it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from melanoma_lit.errors import ConfigError
from melanoma_lit.export import export_checkpoint, run_exported
from melanoma_lit.inference.predictions import ImageFiles
from melanoma_lit.models.module import LesionClassifier
from tests.checkpoints import train_tiny_checkpoint
from tests.conftest import REPO_ROOT

TOLERANCE = 1e-4


def _sample_batch(model: LesionClassifier, images: list[str]) -> torch.Tensor:
    """Real images through the evaluation transform: what a deployment would feed."""
    dataset = ImageFiles(images, model.preprocessing)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def _assert_parity(model_path: Path, run: Path, images: list[str]) -> None:
    model = LesionClassifier.from_checkpoint(run / "checkpoints" / "best.ckpt").eval()
    batch = _sample_batch(model, images)
    with torch.inference_mode():
        expected = model.predict_proba(batch, tta=1).numpy()
    for size in (len(batch), 1):  # the batch axis is dynamic
        got = run_exported(model_path, batch[:size].numpy())
        assert got.shape == (size, len(model.classes)) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected[:size], atol=TOLERANCE, rtol=0)


def test_onnx_export_matches_the_checkpoint(tiny_run, synthetic_images, tmp_path) -> None:
    result = export_checkpoint(tiny_run, "onnx", tmp_path)
    assert result.model_path == tmp_path / "model.onnx" and result.max_abs_difference < TOLERANCE
    session = onnxruntime.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert image_input.type == "tensor(uint8)" and isinstance(image_input.shape[0], str)
    _assert_parity(result.model_path, tiny_run, synthetic_images[:5])

    manifest = json.loads(result.preprocessing_path.read_text())
    model = LesionClassifier.from_checkpoint(tiny_run / "checkpoints" / "best.ckpt")
    prep = model.preprocessing
    assert manifest["input"]["dtype"] == "uint8" and manifest["input"]["layout"] == "NCHW"
    assert manifest["input"]["shape"] == ["batch", 3, *prep.input_size] == ["batch", 3, 64, 64]
    assert manifest["input_size"] == list(prep.input_size) and manifest["resize_side"] == prep.resize_side
    assert manifest["mean"] == list(prep.mean) and manifest["std"] == list(prep.std)
    assert manifest["interpolation"] == prep.interpolation and manifest["crop_pct"] == prep.crop_pct
    assert manifest["classes"] == model.classes and manifest["model_file"] == "model.onnx"


def test_torchscript_export_from_the_command_line(tiny_run, synthetic_images, tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "melanoma_lit.export",
        f"ckpt={tiny_run}",
        "format=torchscript",
        f"paths.output_dir={tmp_path / 'exported'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    model_path = tmp_path / "exported" / "model.pt"
    assert json.loads((tmp_path / "exported" / "preprocessing.json").read_text())["format"] == "torchscript"
    _assert_parity(model_path, tiny_run, synthetic_images[:5])


def test_export_refuses_an_ensemble_and_unknown_formats(tiny_run, tmp_path) -> None:
    with pytest.raises(ConfigError, match="format=tflite"):
        export_checkpoint(tiny_run, "tflite", tmp_path)
    for fold in ("0", "1"):
        shutil.copytree(tiny_run / "checkpoints", tmp_path / "multirun" / fold / "checkpoints")
    with pytest.raises(ConfigError, match="names 2 checkpoints; export takes one"):
        export_checkpoint(tmp_path / "multirun", "onnx", tmp_path / "out")


@pytest.mark.parametrize("existing", ["model.onnx", "preprocessing.json"])
def test_export_never_overwrites_an_earlier_export(tmp_path, existing: str) -> None:
    (tmp_path / existing).write_text("an earlier export")
    with pytest.raises(ConfigError, match=rf"{existing} already exists: export never overwrites"):
        export_checkpoint(tmp_path / "no checkpoint needed to refuse", "onnx", tmp_path)
    assert (tmp_path / existing).read_text() == "an earlier export"


@pytest.mark.slow  # 40-130 s each on 2 CPU cores
@pytest.mark.parametrize("backbone", ["inception_v3", "densenet201", "resnet152", "inception_resnet_v2"])
def test_every_backbone_exports_to_onnx_with_parity(backbone, cache_dir, synthetic_images, tmp_path) -> None:
    run = train_tiny_checkpoint(tmp_path, cache_dir, f"backbone={backbone}", "data.input_size=96")
    result = export_checkpoint(run, "onnx", tmp_path / "exported")
    assert result.max_abs_difference < TOLERANCE
    _assert_parity(result.model_path, run, synthetic_images[:3])
