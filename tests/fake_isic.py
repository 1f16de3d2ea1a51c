"""Small folders in the official ISIC 2017 / 2018 / 2019 layouts: a ground-truth CSV and placeholder image files
(the readers never decode images). Shared by the reliability and fuzz tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from melanoma_lit.data.taxonomy import ISIC_CLASSES

ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC2017_COLUMNS = ("melanoma", "seborrheic_keratosis")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]], sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [sep.join(header), *(sep.join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_images(folder: Path, names: Iterable[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.jpg").write_bytes(b"placeholder")


def one_hot_rows(labels: Mapping[str, str], columns: Sequence[str]) -> list[list[str]]:
    return [[image, *("1.0" if column == label else "0.0" for column in columns)] for image, label in labels.items()]


def write_isic2019(root: Path, labels: Mapping[str, str], images: Iterable[str] | None = None, sep: str = ",") -> Path:
    """``labels`` maps image ids to one of ISIC_CLASSES (or UNK); every id gets a file unless ``images`` says."""
    columns = [*ISIC_CLASSES, "UNK"]
    write_images(root / "ISIC_2019_Training_Input", labels if images is None else images)
    return write_csv(
        root / "ISIC_2019_Training_GroundTruth.csv", ["image", *columns], one_hot_rows(labels, columns), sep
    )


def write_isic2018(root: Path, labels: Mapping[str, str]) -> Path:
    """``labels`` maps image ids to one of ISIC2018_COLUMNS."""
    write_images(root / "ISIC2018_Task3_Training_Input", labels)
    rows = one_hot_rows(labels, ISIC2018_COLUMNS)
    return write_csv(root / "ISIC2018_Task3_Training_GroundTruth.csv", ["image", *ISIC2018_COLUMNS], rows)


def write_isic2017(root: Path, labels: Mapping[str, str]) -> Path:
    """The training split; ``labels`` maps image ids to MEL, BKL or NV (melanoma, seborrheic keratosis, neither)."""
    write_images(root / "ISIC-2017_Training_Data", labels)
    rows = [[image, f"{float(label == 'MEL'):.1f}", f"{float(label == 'BKL'):.1f}"] for image, label in labels.items()]
    return write_csv(root / "ISIC-2017_Training_Part3_GroundTruth.csv", ["image_id", *ISIC2017_COLUMNS], rows)
