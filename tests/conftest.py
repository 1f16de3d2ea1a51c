"""Shared fixtures: the real ISIC copies in ../shared/data and the repo's conf/ tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

# Session fixtures of a tiny trained checkpoint, shared by the inference tests.
pytest_plugins = ["tests.checkpoints"]

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
# A small synthetic set shared by the tests that train (generated once per session).
SMALL_SYNTHETIC = ("data.synthetic.n=96", "data.synthetic.size=64")


def run_command(command: str, *arguments: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m melanoma_lit.<command> ARGUMENTS`` as a user runs it from ``cwd``, with this checkout's package
    and ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", f"melanoma_lit.{command}", *arguments],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def shared_data_root() -> Path:
    return Path(os.environ.get("MELANOMA_LIT_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real dermoscopy copies; tests that need them skip with a reason where they are absent."""
    root = shared_data_root()
    if not (root / "README.md").exists():
        pytest.skip(f"real ISIC data not found at {root}: set MELANOMA_LIT_TEST_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so the synthetic set and folds are generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_config(tmp_path: Path, cache_dir: Path):
    """Compose a real conf/<name>.yaml with overrides, outputs in tmp_path (Hydra compose API)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    def _compose(config_name: str, *overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            if not any(o.startswith("paths.cache_dir=") for o in overrides):
                cfg.paths.cache_dir = str(cache_dir)
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def compose_train(compose_config):
    """conf/train.yaml composed with overrides (see compose_config)."""
    return lambda *overrides: compose_config("train", *overrides)
