"""Where a synthetic set's files go in each official download (isic2019, isic2017, folder), and its CSVs.

The image ids, folders, splits and ground-truth and metadata tables are those of the real downloads, so the
readers of ``sources`` read a synthetic set exactly as they read ISIC's.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.synthetic.cohort import LesionPlan, assign_splits
from melanoma_lit.data.taxonomy import ISIC_CLASSES

LAYOUTS: tuple[str, ...] = ("isic2019", "isic2017", "folder")
ISIC2017_CLASSES: tuple[str, ...] = ("MEL", "NV", "BKL")
# Full folder names of the class-per-folder layout (keys of FOLDER_NAME_TO_CLASS).
FOLDER_NAMES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "pigmented benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
}
_ISIC2017_SPLITS = (("Training", 2000), ("Validation", 150), ("Test_v2", 600))
_FOLDER_SPLITS = (("Train", 0.9), ("Test", 0.1))


@dataclass(frozen=True)
class Job:
    """One image to draw and where it goes."""

    index: int  # image index: seeds the view
    image_id: str
    relpath: str
    lesion: int  # lesion index: seeds the lesion and its skin
    cls: str


def place(lesions: list[LesionPlan], layout: str, seed: int) -> list[tuple[Job, LesionPlan]]:
    """Every photograph of every lesion as a file of ``layout``: its split (lesion-disjoint), image id and path."""
    if layout == "isic2017":
        lesions = assign_splits(lesions, _ISIC2017_SPLITS)
    elif layout == "folder":
        lesions = assign_splits(lesions, _FOLDER_SPLITS)
    images = [plan for plan in lesions for _ in range(plan.views)]
    order = np.random.default_rng([seed, 3]).permutation(len(images))  # image ids do not reveal lesions
    jobs = []
    for index, k in enumerate(order):
        plan = images[k]
        image_id = f"ISIC_{index:07d}"
        if layout == "isic2019":
            relpath = f"ISIC_2019_Training_Input/{image_id}.jpg"
        elif layout == "isic2017":
            relpath = f"ISIC-2017_{plan.split}_Data/{image_id}.jpg"
        else:
            relpath = f"{plan.split}/{FOLDER_NAMES[plan.cls]}/{image_id}.jpg"
        jobs.append((Job(index, image_id, relpath, plan.index, plan.cls), plan))
    return jobs


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with replaced(path) as partial, partial.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _age(age: float, missing: str) -> str:
    return missing if math.isnan(age) else str(int(age))


def write_tables(out: Path, layout: str, jobs: list[tuple[Job, LesionPlan]]) -> None:
    """The ground-truth and metadata CSVs of ``layout``, with the official names and columns."""
    if layout == "isic2019":
        _write_csv(
            out / "ISIC_2019_Training_GroundTruth.csv",
            ["image", *ISIC_CLASSES, "UNK"],
            ([job.image_id, *("1.0" if c == job.cls else "0.0" for c in ISIC_CLASSES), "0.0"] for job, _ in jobs),
        )
        _write_csv(
            out / "ISIC_2019_Training_Metadata.csv",
            ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
            ([job.image_id, _age(p.age, ""), p.site, f"IL_{p.index:07d}", p.sex] for job, p in jobs),
        )
    elif layout == "isic2017":
        for split, _ in _ISIC2017_SPLITS:
            rows = [(job, p) for job, p in jobs if p.split == split]
            _write_csv(
                out / f"ISIC-2017_{split}_Part3_GroundTruth.csv",
                ["image_id", "melanoma", "seborrheic_keratosis"],
                ([j.image_id, "1.0" if j.cls == "MEL" else "0.0", "1.0" if j.cls == "BKL" else "0.0"] for j, _ in rows),
            )
            if split != "Test_v2":  # the official test download has no metadata file
                _write_csv(
                    out / f"ISIC-2017_{split}_Data_metadata.csv",
                    ["image_id", "age_approximate", "sex"],
                    ([j.image_id, _age(p.age, "unknown"), p.sex or "unknown"] for j, p in rows),
                )


def table_files(layout: str) -> list[str]:
    """The CSVs ``write_tables`` writes for ``layout``, relative to the output folder."""
    if layout == "isic2019":
        return ["ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"]
    if layout == "isic2017":
        names = [f"ISIC-2017_{split}_Part3_GroundTruth.csv" for split, _ in _ISIC2017_SPLITS]
        return names + [f"ISIC-2017_{split}_Data_metadata.csv" for split, _ in _ISIC2017_SPLITS if split != "Test_v2"]
    return []


def layout_dirs(layout: str) -> list[str]:
    """The image folders of ``layout``, made even when no image falls in them, as the official downloads have."""
    if layout == "isic2019":
        return ["ISIC_2019_Training_Input"]
    if layout == "isic2017":
        return [f"ISIC-2017_{split}_Data" for split, _ in _ISIC2017_SPLITS]
    return [split for split, _ in _FOLDER_SPLITS]
