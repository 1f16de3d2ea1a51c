"""One diagnosis taxonomy for every source, in ISIC 2019 column order."""

from __future__ import annotations

ISIC_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")

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
