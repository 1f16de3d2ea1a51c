"""Grad-CAM: the maps point at the evidence, every backbone yields overlays of its input size, the command works."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from PIL import Image

from melanoma_lit.errors import ConfigError
from melanoma_lit.explain import input_images
from melanoma_lit.inference.gradcam import class_activation_maps, explain, write_explanations
from melanoma_lit.models.backbone import preprocessing_for
from melanoma_lit.models.head import LesionHead, LesionNet
from melanoma_lit.models.module import LesionClassifier

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["MEL", "NV", "BCC"]

# The three large backbones cost 10-20 s each on 2 CPU cores: they run in `make test-full`.
BACKBONES = [
    ("resnet18", 224),
    ("inception_v3", 299),
    pytest.param("resnet152", 224, marks=pytest.mark.slow),
    pytest.param("densenet201", 224, marks=pytest.mark.slow),
    pytest.param("inception_resnet_v2", 299, marks=pytest.mark.slow),
]


class Redness(nn.Module):
    """A one-channel feature map that is the image's redness at 1/4 resolution: a CNN with a known answer."""

    num_features = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, kernel_size=4, stride=4, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1).expand(1, 3, 4, 4) / 16)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(images))


def redness_net() -> LesionNet:
    """Class 0 rises with redness, class 1 falls with it."""
    head = LesionHead(1, 2, dropout=0.0)
    with torch.no_grad():
        head.layers[-1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        head.layers[-1].bias.zero_()
    return LesionNet(Redness(), head).eval()


def red_patch_image() -> torch.Tensor:
    """A grey 64x96 image (not square, so a transposed map would show) with a red patch in its top right."""
    image = torch.full((1, 3, 64, 96), 0.2)
    image[0, :, 8:24, 60:88] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return image


def test_cam_covers_the_evidence_for_the_class() -> None:
    net = redness_net()
    cams = class_activation_maps(net, red_patch_image(), [0])
    assert cams.shape == (1, 64, 96) and cams.dtype == np.float32
    inside = np.zeros((64, 96), dtype=bool)
    inside[8:24, 60:88] = True
    assert cams[0][inside].mean() > 0.8
    assert cams[0][~inside].mean() < 0.1
    assert np.unravel_index(cams[0].argmax(), cams[0].shape)[0] < 32  # the top half, not a transposed map


def test_cam_is_empty_for_a_class_the_evidence_argues_against() -> None:
    cams = class_activation_maps(redness_net(), red_patch_image(), [1])
    assert np.allclose(cams, 0.0)


def test_a_named_layer_can_be_the_target() -> None:
    cams = class_activation_maps(redness_net(), red_patch_image(), [0], method="gradcam++", layer="backbone.conv")
    assert cams[0][8:24, 60:88].mean() > 0.8


@pytest.mark.parametrize(
    ("layer", "method", "message"), [("backbone.nope", "gradcam", "layer=backbone.nope"), (None, "cam", "'cam'")]
)
def test_bad_layer_or_method_is_a_config_error(layer: str | None, method: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        class_activation_maps(redness_net(), red_patch_image(), [0], method=method, layer=layer)


def test_cam_leaves_the_network_as_it_was() -> None:
    """Usable mid-training: gradients pending in parameters, their requires_grad and train flags all survive."""
    net = redness_net().train()
    net.backbone.conv.weight.requires_grad_(False)  # as a frozen backbone
    pending = torch.full_like(net.head.layers[-1].weight, 3.0)
    net.head.layers[-1].weight.grad = pending
    with torch.inference_mode():  # as in a validation hook
        class_activation_maps(net, red_patch_image(), [0])
    assert net.training and all(module.training for module in net.modules())
    assert not net.backbone.conv.weight.requires_grad and net.head.layers[-1].weight.requires_grad
    assert net.head.layers[-1].weight.grad is pending


def classifier(backbone: str, input_size: int | None = None) -> LesionClassifier:
    return LesionClassifier(
        classes=CLASSES,
        backbone={"name": backbone, "pretrained": False},
        head={},
        loss={},
        optimizer={"name": "adam", "lr": 1e-3},
        scheduler=None,
        preprocessing=asdict(preprocessing_for(backbone, input_size)),
    )


def write_images(folder: Path) -> list[Path]:
    """A landscape JPEG and a small portrait PNG in a subfolder, plus a file that is not an image."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    paths = [folder / "wide.jpg", folder / "sub" / "small.png"]
    Image.fromarray(rng.integers(0, 255, (300, 450, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(paths[1])
    (folder / "notes.txt").write_text("not an image")
    return paths


@pytest.mark.parametrize(("backbone", "size"), BACKBONES)
def test_every_backbone_writes_overlays_of_its_input_size(backbone: str, size: int, tmp_path: Path) -> None:
    model = classifier(backbone).eval()
    paths = write_images(tmp_path / "images")
    rows = write_explanations(model, paths, tmp_path / "out", classes=["MEL", "BCC"], batch_size=2)
    assert [(Path(row["image"]).name, row["class"]) for row in rows] == [
        ("wide.jpg", "MEL"),
        ("small.png", "MEL"),
        ("wide.jpg", "BCC"),
        ("small.png", "BCC"),
    ]
    for row in rows:
        with Image.open(row["overlay"]) as overlay:
            overlay.verify()
        with Image.open(row["overlay"]) as overlay:
            assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size == (size, size)
            assert np.asarray(overlay).std() > 0
    listing = pd.read_csv(tmp_path / "out" / "gradcam.csv")
    assert len(listing) == 4 and listing["probability"].between(0, 1).all()
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "small_BCC.png",
        "small_MEL.png",
        "wide_BCC.png",
        "wide_MEL.png",
    ]


def test_top_class_by_default_and_probabilities_match_the_model() -> None:
    model = classifier("resnet18", 64).eval()
    model.temperature.copy_(torch.linspace(0.3, 3.0, len(model.classes)))  # the probabilities predict reports
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    result = explain(model, images)
    with torch.no_grad():
        probs = model.predict_proba(images, tta=1).numpy()
    np.testing.assert_allclose(result.probs, probs, atol=1e-6)
    assert result.class_indices.tolist() == probs.argmax(axis=1).tolist()
    assert result.cams.shape == (3, 64, 64) and result.cams.min() >= 0.0 and result.cams.max() <= 1.0


def test_unknown_class_and_clashing_names_are_config_errors(tmp_path: Path) -> None:
    model = classifier("resnet18", 64).eval()
    paths = write_images(tmp_path / "images")
    with pytest.raises(ConfigError, match="class=SCC"):
        write_explanations(model, paths, tmp_path / "out", classes=["SCC"])
    twin = tmp_path / "images" / "sub" / "wide.png"
    Image.new("RGB", (40, 40)).save(twin)
    with pytest.raises(ConfigError, match="wide"):
        write_explanations(model, [paths[0], twin], tmp_path / "out")


def test_inputs_are_files_or_the_images_of_a_folder(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images")
    assert input_images([], str(tmp_path / "images")) == sorted(paths)
    assert input_images([str(paths[1])], None) == [paths[1]]
    with pytest.raises(ConfigError, match="either"):
        input_images([str(paths[0])], str(tmp_path / "images"))
    with pytest.raises(ConfigError, match="not found"):
        input_images([str(tmp_path / "gone.jpg")], None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("nothing to see")
    with pytest.raises(ConfigError, match="no image files"):
        input_images([], str(tmp_path / "empty"))


def save_checkpoint(model: LesionClassifier, path: Path) -> Path:
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def test_explain_command_writes_overlays_for_a_folder(tmp_path: Path) -> None:
    ckpt = save_checkpoint(classifier("resnet18", 64), tmp_path / "model.ckpt")
    write_images(tmp_path / "images")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, "-m", "melanoma_lit.explain", f"ckpt={ckpt}", f"input={tmp_path / 'images'}"]
    done = subprocess.run(
        [*command, f"paths.output_dir={tmp_path / 'cams'}", "class=NV"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "cams").glob("*.png")) == ["small_NV.png", "wide_NV.png"]
    for png in (tmp_path / "cams").glob("*.png"):
        with Image.open(png) as image:
            assert image.size == (64, 64)
    assert (tmp_path / "outputs" / "explain").is_dir()  # Hydra's run folder, paths.output_dir's default

    before = {png.name: png.read_bytes() for png in (tmp_path / "cams").iterdir()}
    again = subprocess.run(
        [*command, f"paths.output_dir={tmp_path / 'cams'}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "already holds Grad-CAM overlays (gradcam.csv)" in again.stderr
    assert {png.name: png.read_bytes() for png in (tmp_path / "cams").iterdir()} == before
