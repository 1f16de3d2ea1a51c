"""python -m melanoma_lit.export ckpt=PATH format=onnx|torchscript: a deployable model + preprocessing.json.

The exported model takes **uint8 RGB NCHW** images already resized and centre-cropped to the input size
(values 0-255) and normalises inside, as the LightningModule does: a deployment cannot get the mean/std
wrong. It returns per-class **sigmoid probabilities** ``[N, K]`` of the logits divided by the checkpoint's
temperature (models.temperature), as ``evaluate`` and ``predict`` give them; the batch axis is dynamic. No TTA: average
over flips yourself if wanted. ``preprocessing.json`` beside the model says all of this, machine-readably.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn as nn
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.atomic import replaced
from melanoma_lit.errors import ConfigError, MelanomaLitError
from melanoma_lit.inference.predictions import resolve_checkpoints
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.runs.checks import check_config, check_paths

log = logging.getLogger(__name__)

MODEL_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


class ProbabilityModel(nn.Module):
    """uint8 NCHW images in, sigmoid probabilities out: the checkpoint's network with its normalisation and
    temperature."""

    def __init__(self, classifier: LesionClassifier) -> None:
        super().__init__()
        self.net = classifier.net.to(memory_format=torch.contiguous_format)
        self.register_buffer("mean", classifier.mean.clone())
        self.register_buffer("std", classifier.std.clone())
        self.register_buffer("temperature", classifier.temperature.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((images.float() - self.mean) / self.std) / self.temperature)


@dataclass
class ExportResult:
    model_path: Path
    preprocessing_path: Path
    max_abs_difference: float | None  # exported vs checkpoint on random images; None when not checked


def export_checkpoint(
    ckpt: str | Path,
    fmt: str,
    output_dir: str | Path,
    opset: int | None = None,
    check: bool = True,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Write the model file and ``preprocessing.json`` into ``output_dir``; with ``check``, compare the
    exported model's outputs to the checkpoint's on random images and fail above ``tolerance``."""
    if fmt not in MODEL_FILES:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(MODEL_FILES)}.")
    output_dir = Path(output_dir)
    model_path, preprocessing_path = output_dir / MODEL_FILES[fmt], output_dir / "preprocessing.json"
    earlier = [path for path in (model_path, preprocessing_path) if path.exists()]
    if earlier:
        raise ConfigError(
            f"{earlier[0]} already exists: export never overwrites an earlier export. Give another paths.output_dir=, "
            "or move those files away."
        )
    checkpoints = resolve_checkpoints(ckpt)
    if len(checkpoints) != 1:
        raise ConfigError(
            f"ckpt={ckpt} names {len(checkpoints)} checkpoints; export takes one: pass ckpt=<run dir> or a .ckpt file."
        )
    classifier = LesionClassifier.from_checkpoint(checkpoints[0]).eval()
    model = ProbabilityModel(classifier).eval()
    height, width = classifier.preprocessing.input_size
    example = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
    output_dir.mkdir(parents=True, exist_ok=True)
    with replaced(model_path) as partial:  # an interrupt leaves no half-written model
        if fmt == "onnx":
            _export_onnx(model, example, partial, opset)
        else:
            with torch.no_grad(), _quiet():
                torch.jit.save(torch.jit.trace(model, example), str(partial))
    manifest = preprocessing_manifest(classifier, fmt, model_path.name, checkpoints[0])
    with replaced(preprocessing_path) as partial:
        partial.write_text(json.dumps(manifest, indent=2))
    difference = None
    if check:
        images = torch.randint(0, 256, (3, 3, height, width), dtype=torch.uint8)  # a batch size not exported with
        with torch.no_grad():
            expected = classifier.predict_proba(images, tta=1).numpy()
        difference = float(np.abs(run_exported(model_path, images.numpy()) - expected).max())
        if difference > tolerance:
            raise MelanomaLitError(
                f"{model_path}: exported outputs differ from the checkpoint's by {difference:.2e} (> {tolerance:g}). "
                "Try the other format, or another opset for ONNX."
            )
    log.info("exported %s to %s (max |difference| %s)", checkpoints[0], model_path, difference)
    return ExportResult(model_path, preprocessing_path, difference)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter's dependency; fail here with the fix, not deep inside)
    except ImportError as error:
        raise ConfigError("format=onnx needs onnx and onnxscript: pip install 'melanoma_lit[export]'.") from error
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=4096)}},
            external_data=False,
            dynamo=True,
            verbose=False,
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters warn about their own internals (and torch.jit about its deprecation): nothing to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_exported(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from an exported model file (onnxruntime for .onnx, torch.jit for .pt)."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError as error:
            raise ConfigError("running an ONNX model needs onnxruntime: pip install 'melanoma_lit[export]'.") from error
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    with torch.no_grad(), _quiet():
        return torch.jit.load(str(path), map_location="cpu")(torch.from_numpy(images)).numpy()


def preprocessing_manifest(classifier: LesionClassifier, fmt: str, model_file: str, ckpt: Path) -> dict[str, Any]:
    """What a deployment must do to an image before the model sees it, and what comes out."""
    prep = classifier.preprocessing
    height, width = prep.input_size
    return {
        "model_file": model_file,
        "format": fmt,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "layout": "NCHW",
            "channels": "RGB",
            "shape": ["batch", 3, height, width],
            "value_range": [0, 255],
            "normalisation": "inside the model: (x - mean * 255) / (std * 255); do not normalise yourself",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(classifier.classes)],
            "activation": "sigmoid of logit / temperature, one independent probability per class",
        },
        "temperature": dict(zip(classifier.classes, classifier.temperature.tolist(), strict=True)),
        "classes": list(classifier.classes),
        "input_size": [height, width],
        "resize_side": prep.resize_side,
        "crop_pct": prep.crop_pct,
        "interpolation": prep.interpolation,
        "mean": list(prep.mean),
        "std": list(prep.std),
        "resize": (
            f"decode to RGB (EXIF-rotated), resize the shorter side to resize_side={prep.resize_side} with "
            f"{prep.interpolation} interpolation, centre-crop {height}x{width}, HWC -> CHW"
        ),
        "tta": "none (average over the 8 flips/rotations yourself if wanted)",
        "backbone": classifier.hparams.backbone["name"],
        "checkpoint": str(ckpt),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@friendly_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, "export")
    check_paths(cfg, ["paths.output_dir"])
    result = export_checkpoint(
        cfg.ckpt, cfg.format, cfg.paths.output_dir, opset=cfg.opset, check=cfg.check, tolerance=cfg.tolerance
    )
    print(f"{result.model_path}\n{result.preprocessing_path}")


if __name__ == "__main__":
    run(main, "export")
