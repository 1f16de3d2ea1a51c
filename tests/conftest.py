"""Shared fixtures: the real ISIC copies in ../shared/data and the repo's conf/ tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def shared_data_root() -> Path:
    return Path(os.environ.get("MELANOMA_LIT_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real dermoscopy copies; tests that need them skip with a reason where they are absent."""
    root = shared_data_root()
    if not (root / "README.md").exists():
        pytest.skip(f"real ISIC data not found at {root}: set MELANOMA_LIT_TEST_DATA to the shared data folder")
    return root
