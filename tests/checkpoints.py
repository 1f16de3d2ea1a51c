"""A tiny real checkpoint for the inference tests, trained once per test session and shared by their files.

Test modules import the fixtures (``from tests.checkpoints import tiny_run``); the run is trained on disk once
and found there by every later request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from melanoma_lit.train import train
from tests.conftest import CONF_DIR, REPO_ROOT, SMALL_SYNTHETIC


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


# The last commit before calibrated probabilities and metadata fusion (issue 17): checkpoints it wrote must still
# load and predict as they did.
PRE_CALIBRATION_COMMIT = "5f06e321"


@pytest.fixture(scope="session")
def pre_calibration_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run dir of a tiny synthetic run trained by the package as it was at ``PRE_CALIBRATION_COMMIT``: that
    commit's code and configs, taken from git and run in a subprocess, write a checkpoint of the old format."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip(f"{REPO_ROOT} is not a git checkout: the pre-calibration code cannot be taken from its history")
    old = tmp_path_factory.mktemp("pre-calibration-code")
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", PRE_CALIBRATION_COMMIT, "melanoma_lit", "conf", "hydra_plugins"],
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        pytest.skip(f"commit {PRE_CALIBRATION_COMMIT} is not in this clone's history: {archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    run = tmp_path_factory.mktemp("pre-calibration-run")
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "melanoma_lit.train",
            "debug=limit",
            "data.input_size=64",
            *SMALL_SYNTHETIC,
            f"paths.output_dir={run}",
            f"paths.cache_dir={tmp_path_factory.mktemp('pre-calibration-cache')}",
        ],
        cwd=old,
        env={**os.environ, "PYTHONPATH": str(old)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    return run
