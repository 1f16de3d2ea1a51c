"""python -m melanoma_lit.explain ckpt=PATH images=[...] | input=FOLDER [class=MEL]: Grad-CAM overlays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.errors import ConfigError
from melanoma_lit.runs.checks import check_config, check_paths

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

log = logging.getLogger(__name__)


def input_images(images: Sequence[str], folder: str | None) -> list[Path]:
    """The listed files, or every image file (by suffix) under ``folder``, sorted."""
    if bool(images) == bool(folder):
        raise ConfigError("give either images=[a.jpg,...] or input=FOLDER (one of them)")
    if folder:
        if not Path(folder).is_dir():
            raise ConfigError(f"input={folder} is not a folder")
        paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ConfigError(f"input={folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return paths
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"image files not found: {', '.join(missing)}")
    return [Path(p) for p in images]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="explain")
@friendly_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, "explain")
    check_paths(cfg, ["paths.output_dir"])
    import torch

    from melanoma_lit.inference.gradcam import GRADCAM_TABLE, write_explanations
    from melanoma_lit.inference.predictions import resolve_checkpoints
    from melanoma_lit.models.module import LesionClassifier

    out = Path(cfg.paths.output_dir)
    if (out / GRADCAM_TABLE).exists():
        raise ConfigError(
            f"{out} already holds Grad-CAM overlays ({GRADCAM_TABLE}): explain never overwrites them. Give another "
            "paths.output_dir=<folder>, or move them away."
        )
    paths = input_images(list(cfg.images), cfg.input)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    checkpoints = resolve_checkpoints(cfg.ckpt)  # a .ckpt file or a run dir, as every command takes
    if len(checkpoints) != 1:
        raise ConfigError(
            f"ckpt={cfg.ckpt} names {len(checkpoints)} checkpoints; explain takes one: pass a run dir or a .ckpt file."
        )
    model = LesionClassifier.from_checkpoint(checkpoints[0], map_location=device).eval()
    classes = cfg["class"]
    classes = list(classes) if isinstance(classes, ListConfig) else [classes] if classes else None
    rows = write_explanations(model, paths, out, classes, cfg.method, cfg.layer, cfg.batch_size)
    log.info("%d Grad-CAM overlays of %d images in %s (listed in %s)", len(rows), len(paths), out, GRADCAM_TABLE)


if __name__ == "__main__":
    run(main, "explain")
