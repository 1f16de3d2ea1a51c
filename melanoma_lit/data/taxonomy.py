"""One diagnosis taxonomy for every source, in ISIC 2019 column order."""

from __future__ import annotations

from collections.abc import Sequence

ISIC_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")

# Classes other challenges score that are made of the ISIC 2019 ones. ISIC 2018 Task 3's AKIEC ("actinic keratosis
# or intraepithelial carcinoma") is AK or SCC; ISIC 2017 Part 3's seborrheic keratosis is one of 2019's benign
# keratoses. A source that knows the coarse class but not the fine one leaves the fine one unknown.
UNION_CLASSES: dict[str, tuple[str, ...]] = {"AKIEC": ("AK", "SCC")}
SUBTYPE_CLASSES: dict[str, str] = {"SK": "BKL"}
LABELS: tuple[str, ...] = (*ISIC_CLASSES, *UNION_CLASSES, *SUBTYPE_CLASSES)


def label_space(classes: Sequence[str]) -> list[str]:
    """``classes`` and every taxonomy label besides: what sources are merged over before a label set is chosen."""
    return [*classes, *(label for label in LABELS if label not in classes)]


# Malignant for the malignant-vs-benign score: melanoma, the two keratinocyte
# carcinomas and actinic keratosis (a precancerous lesion that ISIC groups with them).
MALIGNANT: frozenset[str] = frozenset({"MEL", "BCC", "SCC", "AK"})

# Common folder names of class-per-folder datasets, lower-cased, mapped to the taxonomy.
FOLDER_NAME_TO_CLASS: dict[str, str] = {
    "melanoma": "MEL",
    "mel": "MEL",
    "nevus": "NV",
    "nevi": "NV",
    "melanocytic nevi": "NV",
    "nv": "NV",
    "basal cell carcinoma": "BCC",
    "bcc": "BCC",
    "actinic keratosis": "AK",
    "actinic keratoses": "AK",
    "ak": "AK",
    "pigmented benign keratosis": "BKL",
    "seborrheic keratosis": "BKL",
    "benign keratosis": "BKL",
    "benign keratosis-like lesions": "BKL",
    "bkl": "BKL",
    "dermatofibroma": "DF",
    "df": "DF",
    "vascular lesion": "VASC",
    "vascular lesions": "VASC",
    "vasc": "VASC",
    "squamous cell carcinoma": "SCC",
    "scc": "SCC",
}
