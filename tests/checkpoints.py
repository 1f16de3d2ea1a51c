"""A tiny real checkpoint for inference tests, trained once per test session and reused by every file."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from melanoma_lit.training import train
from tests.conftest import CONF_DIR


def train_tiny_checkpoint(base: Path, cache_dir: Path, *overrides: str) -> Path:
    """A resnet18 run of ``debug=limit`` at 64 px into ``base/<overrides>``; the run dir, trained if absent."""
    run = base / ("tiny-" + "-".join(o.replace("/", "_").replace("=", "_") for o in overrides) if overrides else "tiny")
    if not (run / "checkpoints" / "best.ckpt").is_file():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    "debug=limit",
                    "backbone.input_size=64",
                    f"paths.output_dir={run}",
                    f"paths.cache_dir={cache_dir}",
                    *overrides,
                ],
            )
        GlobalHydra.instance().clear()
        train(cfg)
    return run
