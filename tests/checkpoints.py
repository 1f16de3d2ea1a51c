"""A tiny real checkpoint for the inference tests, trained once per test session and shared by their files.

Test modules import the fixtures (``from tests.checkpoints import tiny_run``); the run is trained on disk once
and found there by every later request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from melanoma_lit.train import train
from tests.conftest import CONF_DIR, SMALL_SYNTHETIC


def train_tiny_checkpoint(base: Path, cache_dir: Path, *overrides: str) -> Path:
    """The run dir of a resnet18 ``debug=limit`` run at 64 px (on the small synthetic set unless a data= override),
    trained if not yet there."""
    run = base / "tiny-run"
    synthetic = () if any(o.startswith("data=") for o in overrides) else SMALL_SYNTHETIC
    if not (run / "checkpoints" / "best.ckpt").is_file():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    "debug=limit",
                    "data.input_size=64",
                    *synthetic,
                    f"paths.output_dir={run}",
                    f"paths.cache_dir={cache_dir}",
                    *overrides,
                ],
            )
        GlobalHydra.instance().clear()
        train(cfg)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Run dir (checkpoints/best.ckpt, metrics.json, val_predictions.csv) of the synthetic debug=limit run."""
    return train_tiny_checkpoint(tmp_path_factory.getbasetemp(), cache_dir)


@pytest.fixture(scope="session")
def synthetic_images(tiny_run: Path, cache_dir: Path) -> list[str]:
    """Paths of the synthetic images the tiny run was trained on."""
    return sorted(str(path) for path in (cache_dir / "synthetic").rglob("*.jpg"))
