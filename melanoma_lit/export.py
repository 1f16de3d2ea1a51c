"""python -m melanoma_lit.export ckpt=PATH format=onnx|torchscript: a deployable model + preprocessing.json.

The exported model takes **uint8 RGB NCHW** images already resized and centre-cropped to the input size
(values 0-255) and normalises inside, as the LightningModule does: a deployment cannot get the mean/std
wrong. It returns per-class **sigmoid probabilities** ``[N, K]`` of the logits divided by the checkpoint's
temperature (models.temperature), as ``evaluate`` and ``predict`` give them; the batch axis is dynamic. No TTA: average
over flips yourself if wanted. A model fusing patient metadata (``model.metadata``) takes a second input,
``metadata``: float32 ``[N, F]`` rows encoded as ``preprocessing.json``'s ``metadata`` entry says.
``preprocessing.json`` beside the model says all of this, machine-readably.
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
import pandas as pd
import torch
import torch.nn as nn
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.metadata import UNKNOWN, MetadataEncoder
from melanoma_lit.errors import ConfigError, MelanomaLitError
from melanoma_lit.inference.predictions import resolve_checkpoints
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.runs.checks import check_config, check_paths

log = logging.getLogger(__name__)

MODEL_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
INPUT_NAME = "images"
METADATA_NAME = "metadata"  # the second input of a model fusing patient metadata
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
        return self.probabilities(images, None)

    def probabilities(self, images: torch.Tensor, metadata: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(self.net((images.float() - self.mean) / self.std, metadata) / self.temperature)


class MetadataProbabilityModel(ProbabilityModel):
    """A model fusing patient metadata: its encoded rows (float32 ``[N, F]``, see preprocessing.json) are a
    second input."""

    def forward(self, images: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        return self.probabilities(images, metadata)


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
    encoder = classifier.metadata_encoder
    model = (MetadataProbabilityModel if encoder else ProbabilityModel)(classifier).eval()
    example = example_inputs(classifier, 2)
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
        inputs = example_inputs(classifier, 3)  # a batch size not exported with
        with torch.no_grad():
            expected = classifier.predict_proba(inputs[0], tta=1, metadata=inputs[1] if encoder else None).numpy()
        difference = float(np.abs(run_exported(model_path, *(x.numpy() for x in inputs)) - expected).max())
        if difference > tolerance:
            raise MelanomaLitError(
                f"{model_path}: exported outputs differ from the checkpoint's by {difference:.2e} (> {tolerance:g}). "
                "Try the other format, or another opset for ONNX."
            )
    log.info("exported %s to %s (max |difference| %s)", checkpoints[0], model_path, difference)
    return ExportResult(model_path, preprocessing_path, difference)


def example_inputs(classifier: LesionClassifier, batch: int) -> tuple[torch.Tensor, ...]:
    """Random uint8 images, and for a model fusing metadata, encoded metadata rows of random patients."""
    height, width = classifier.preprocessing.input_size
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
    encoder = classifier.metadata_encoder
    if encoder is None:
        return (images,)
    rng = np.random.default_rng(batch)
    patients = pd.DataFrame(
        {
            "age": rng.choice([np.nan, 15.0, 45.0, 80.0], batch),
            "sex": rng.choice([*encoder.sexes, ""], batch),
            "site": rng.choice([*encoder.sites, ""], batch),
        }
    )
    return images, torch.from_numpy(encoder.encode(patients))


def _export_onnx(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, opset: int | None) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter's dependency; fail here with the fix, not deep inside)
    except ImportError as error:
        raise ConfigError("format=onnx needs onnx and onnxscript: pip install 'melanoma_lit[export]'.") from error
    with _quiet():
        batch = torch.export.Dim("batch", min=1, max=4096)
        names = [INPUT_NAME, METADATA_NAME][: len(example)]
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes={name: {0: batch} for name in names},
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


def run_exported(path: str | Path, images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
    """Probabilities from an exported model file (onnxruntime for .onnx, torch.jit for .pt); ``metadata``: the
    encoded rows a model fusing patient metadata takes as its second input."""
    path = Path(path)
    inputs = (images,) if metadata is None else (images, metadata)
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError as error:
            raise ConfigError("running an ONNX model needs onnxruntime: pip install 'melanoma_lit[export]'.") from error
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], dict(zip([INPUT_NAME, METADATA_NAME], inputs, strict=False)))[0]
    with torch.no_grad(), _quiet():
        return torch.jit.load(str(path), map_location="cpu")(*(torch.from_numpy(x) for x in inputs)).numpy()


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
        **({"metadata": metadata_manifest(classifier.metadata_encoder)} if classifier.metadata_encoder else {}),
        "backbone": classifier.hparams.backbone["name"],
        "checkpoint": str(ckpt),
    }


def metadata_manifest(encoder: MetadataEncoder) -> dict[str, Any]:
    """How to encode a patient's metadata for the second input, as data.metadata.MetadataEncoder does."""
    return {
        "name": METADATA_NAME,
        "dtype": "float32",
        "shape": ["batch", encoder.width],
        "features": encoder.feature_names(),
        "columns": list(encoder.columns),
        "age": f"(age - {encoder.age_mean}) / {encoder.age_std}, and 0 with age_missing=1 where unknown",
        "age_mean": encoder.age_mean,
        "age_std": encoder.age_std,
        "one_hot": {column: list(encoder.levels[column]) for column in encoder.columns if column != "age"},
        "unknown": f"an empty or unlisted value sets the '{UNKNOWN}' level",
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
