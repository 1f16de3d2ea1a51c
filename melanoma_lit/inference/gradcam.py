"""Grad-CAM for any timm CNN backbone: where in the image the evidence for a class lies.

The default target is the backbone's final feature map, the very tensor the head pools, so no per-architecture
layer table is needed: ``forward_features`` is wrapped in a module and the CAM hooks that module. A named
submodule of ``LesionNet`` (``backbone.layer3``) can be targeted instead.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from rich.progress import Progress

from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.images import load_rgb
from melanoma_lit.data.transforms import eval_transform
from melanoma_lit.errors import ConfigError
from melanoma_lit.models.head import LesionNet
from melanoma_lit.models.module import LesionClassifier

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM}

GRADCAM_TABLE = "gradcam.csv"  # one row per overlay: image, class, probability, overlay file


class _FeatureMap(nn.Module):
    """The backbone's ``forward_features`` as a module, so a hook sees exactly what the head pools."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(images)


class _CamNet(nn.Module):
    """The network with the backbone's feature map as a hook target; a fusing head gets fixed metadata rows."""

    def __init__(self, net: LesionNet, metadata: torch.Tensor | None = None) -> None:
        super().__init__()
        self.features = _FeatureMap(net.backbone)
        self.head = net.head
        self.metadata = metadata

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images), self.metadata)


@dataclass(frozen=True)
class Explanation:
    """Per image: the class explained, every class probability and the CAM in [0, 1] at the input size."""

    cams: np.ndarray  # [N, H, W] float32
    class_indices: np.ndarray  # [N]
    probs: np.ndarray  # [N, K]


def class_activation_maps(
    net: LesionNet,
    images: torch.Tensor,
    class_indices: Sequence[int],
    method: str = "gradcam",
    layer: str | None = None,
    metadata: torch.Tensor | None = None,
) -> np.ndarray:
    """CAMs ``[N, H, W]`` in [0, 1] at the size of ``images`` (normalised NCHW floats) for one class each;
    ``metadata``: the encoded rows a head fusing patient metadata reads beside the images.

    Leaves the network as it found it: parameter gradients untouched, train/eval flags restored; usable in
    the middle of training and inside Lightning's inference mode.
    """
    if method not in METHODS:
        raise ConfigError(f"Grad-CAM method {method!r} is not one of {', '.join(METHODS)}")
    model = _CamNet(net, metadata)
    target = model.features if layer is None else _submodule(net, layer)
    with torch.inference_mode(False), torch.enable_grad(), _untouched(net):
        inputs = images.detach().clone().requires_grad_(True)  # parameters are frozen: gradients start here
        cam = METHODS[method](model, target_layers=[target])
        try:
            maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(i)) for i in class_indices])
        finally:
            cam.activations_and_grads.release()
    if maps.ndim != 3:
        raise ConfigError(
            f"Grad-CAM needs a 2-D feature map but layer {layer or 'forward_features'} gave {maps.ndim - 1}-D output; "
            "pass layer=<name of a convolutional module of the model>."
        )
    return maps.astype(np.float32)


def explain(
    model: LesionClassifier,
    images: torch.Tensor,
    class_indices: Sequence[int] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    metadata: torch.Tensor | None = None,
) -> Explanation:
    """CAMs for uint8 NCHW ``images`` in eval mode (train flags restored after); ``None`` explains each top class.

    A model fusing patient metadata reads ``metadata`` (encoded rows), or with none every column "unknown": the
    map then explains what the image alone contributes.
    """
    images = model.normalise(images.to(model.device))
    encoder = model.metadata_encoder
    if encoder is not None and metadata is None:
        metadata = torch.from_numpy(encoder.encode(pd.DataFrame(index=range(len(images)))))
    metadata = metadata.to(images.device) if metadata is not None else None
    with _untouched(model.net):
        model.net.eval()
        with torch.no_grad():
            probs = torch.sigmoid(model.scaled_logits(images, metadata)).float().cpu().numpy()  # as predict gives
        chosen = probs.argmax(axis=1) if class_indices is None else np.asarray(class_indices, dtype=np.int64)
        cams = class_activation_maps(model.net, images, chosen.tolist(), method, layer, metadata)
    return Explanation(cams=cams, class_indices=chosen, probs=probs)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The CAM as a jet heatmap blended over an RGB uint8 HxWx3 image of the same size."""
    return show_cam_on_image(image.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=image_weight)


def write_explanations(
    model: LesionClassifier,
    paths: Sequence[Path],
    out_dir: Path,
    classes: Sequence[str] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 8,
) -> list[dict[str, object]]:
    """One overlay PNG per image and class (``<stem>_<CLASS>.png``, the model's input size) plus ``gradcam.csv``.

    ``classes=None`` explains each image's most probable class. Images go through the evaluation transform
    (resize, centre crop), so the overlay shows exactly the pixels the model saw.
    """
    indices = [_class_index(model, name) for name in classes] if classes else [None]
    _check_unique_stems(paths)
    transform = eval_transform(model.preprocessing)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("Grad-CAM", total=len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = torch.stack([transform(image=load_rgb(path))["image"] for path in chunk])
            pictures = batch.permute(0, 2, 3, 1).numpy()
            for index in indices:
                result = explain(model, batch, None if index is None else [index] * len(chunk), method, layer)
                for path, picture, cam, cls, probs in zip(
                    chunk, pictures, result.cams, result.class_indices, result.probs, strict=True
                ):
                    name = model.classes[cls]
                    target = out_dir / f"{Path(path).stem}_{name}.png"
                    with replaced(target) as partial:
                        Image.fromarray(overlay(picture, cam)).save(partial, format="PNG")
                    rows.append(
                        {"image": str(path), "class": name, "probability": float(probs[cls]), "overlay": target}
                    )
            progress.advance(task, len(chunk))
    with replaced(out_dir / GRADCAM_TABLE) as partial, partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "class", "probability", "overlay"])
        writer.writeheader()
        writer.writerows({**row, "probability": f"{row['probability']:.6f}"} for row in rows)
    return rows


def _class_index(model: LesionClassifier, name: str) -> int:
    if name not in model.classes:
        raise ConfigError(f"class={name}: the model predicts {', '.join(model.classes)}; pick one of those")
    return model.classes.index(name)


def _check_unique_stems(paths: Sequence[Path]) -> None:
    stems = [Path(path).stem for path in paths]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ConfigError(
            f"several input images are named {', '.join(repeated[:5])}: their overlays would overwrite each other; "
            "explain them in separate runs with different paths.output_dir folders."
        )


def _submodule(net: LesionNet, name: str) -> nn.Module:
    try:
        return net.get_submodule(name)
    except AttributeError as error:
        top = ", ".join(f"backbone.{child}" for child, _ in net.backbone.named_children())
        raise ConfigError(f"layer={name} is not a module of the model; its backbone has {top}") from error


@contextlib.contextmanager
def _untouched(net: nn.Module) -> Iterator[None]:
    """Freeze parameters (gradients flow to activations only); restore train flags and any pending gradients.

    The CAM library zeroes the model's gradients; keeping them matters mid-epoch with gradient accumulation.
    """
    modes = {module: module.training for module in net.modules()}
    params = {param: (param.requires_grad, param.grad) for param in net.parameters()}
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, (flag, grad) in params.items():
            param.requires_grad_(flag)
            param.grad = grad
        for module, flag in modes.items():
            module.train(flag)
