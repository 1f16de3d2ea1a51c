"""Readers for the official ISIC layouts: each returns one table (see melanoma_lit.data.table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from melanoma_lit.data.table import known_column, normalise_table
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import DataError


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found. Check data.root points at the folder of the official download.")
    frame = pd.read_csv(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Use the official CSV (comma-separated, with its header row)."
        )
    return frame


def read_isic2019(root: str | Path) -> pd.DataFrame:
    """ISIC 2019 training set: ground truth, metadata (lesion ids) and ``ISIC_2019_Training_Input``."""
    root = Path(root)
    truth = _read_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", *ISIC_CLASSES])
    table = pd.DataFrame({"image_id": truth["image"].astype(str)})
    for cls in ISIC_CLASSES:
        table[cls] = truth[cls].astype(float)
        table[known_column(cls)] = 1.0
    meta_path = root / "ISIC_2019_Training_Metadata.csv"
    if meta_path.exists():
        meta = _read_csv(meta_path, ["image"]).rename(
            columns={"image": "image_id", "age_approx": "age", "anatom_site_general": "site"}
        )
        table = table.merge(meta, on="image_id", how="left")
    image_dir = root / "ISIC_2019_Training_Input"
    table["path"] = [
        str(image_dir / f"{i}.jpg") if (image_dir / f"{i}.jpg").exists() else "" for i in table["image_id"]
    ]
    table["image_id"] = table["image_id"].str.replace("_downsampled", "", regex=False)
    table["source"] = "isic2019"
    table["split"] = "train"
    return normalise_table(table, ISIC_CLASSES)
