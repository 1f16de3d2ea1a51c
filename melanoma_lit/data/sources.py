"""Readers for the official ISIC layouts and class-per-folder sets, each returning one table (data.table).

Readers that drop duplicate images log the count and store it in ``table.attrs[DUPLICATES_DROPPED]``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from melanoma_lit.data.table import check_unique_ids, known_column, normalise_table
from melanoma_lit.data.taxonomy import FOLDER_NAME_TO_CLASS, ISIC_CLASSES, LABELS
from melanoma_lit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
DUPLICATES_DROPPED = "duplicates_dropped"
IMAGE_DIRS = "image_dirs"  # table.attrs: the folders a reader looked for its images in (named when files are missing)
_ID_SUFFIX = re.compile(r"(_downsampled|\s*\(\d+\))$")
_ISIC_ID = r"ISIC_\d{7}"
_NOT_LESION_IMAGES = ("_superpixels",)  # ISIC 2017's superpixel maps sit beside the images


_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_SHOWN = 5


def _read_csv(path: Path, required: list[str], id_column: str | None = None) -> pd.DataFrame:
    """Every cell as text (labels are parsed by _binary_labels); with ``id_column``, each row must name a
    distinct image."""
    if not path.exists():
        raise DataError(f"{path}: file not found. Check data.root points at the folder of the official download.")
    try:
        with warnings.catch_warnings():
            # index_col=False keeps pandas from making the first column an index when the first row is longer than
            # the header; it warns that it drops the extra cells instead, which must not pass silently
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, encoding="utf-8-sig", index_col=False)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: the file is empty. Re-download the official file.") from error
    except pd.errors.ParserWarning as error:
        raise DataError(
            f"{path}: line 2 has more cells than the header has columns. Fix that row (a stray comma?) "
            "or re-download the official file."
        ) from error
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as error:
        raise DataError(
            f"{path}: not a readable CSV ({type(error).__name__}: {str(error)[:200]}). "
            "Re-download the official file, or save it again as comma-separated UTF-8 text."
        ) from error
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        header = ",".join(frame.columns)
        found = [name for mark, name in _DELIMITERS.items() if mark in header]
        hint = (
            f"The header is {found[0]}-separated: save the file comma-separated, as the official files are."
            if found and len(frame.columns) < len(required)
            else "Use the official CSV (comma-separated, with its header row)."
        )
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)[:20]}. {hint}")
    if id_column is not None:
        _check_ids(frame, id_column, path)
    return frame


def _lines(rows: pd.Index) -> str:
    """CSV line numbers of data rows (the header is line 1)."""
    return ", ".join(str(row + 2) for row in rows[:_SHOWN])


def _check_ids(frame: pd.DataFrame, column: str, path: Path) -> None:
    ids = frame[column].str.strip()
    blank = ids.isna() | (ids == "")
    if blank.any():
        raise DataError(
            f"{path}: {blank.sum()} rows have no {column} (line(s) {_lines(frame.index[blank])}). "
            "Fill in the image name or delete those rows."
        )
    repeated = ids.duplicated(keep=False)
    if repeated.any():
        first = ids[repeated].iloc[0]
        rows = frame[ids == first]
        conflict = " with different values" if len(rows.drop_duplicates()) > 1 else ""
        raise DataError(
            f"{path}: {ids[repeated].nunique()} image ids appear on more than one row (first: {first} on lines "
            f"{_lines(rows.index)}{conflict}). Keep one row per image: delete the extra rows."
        )


def _binary_labels(frame: pd.DataFrame, columns: Sequence[str], path: Path, id_column: str) -> pd.DataFrame:
    """Label columns as floats 0/1; anything else (text, empty, 0.5, NaN) names its file, line and image."""
    values = frame[list(columns)].apply(lambda column: pd.to_numeric(column.str.strip(), errors="coerce"))
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        rows = bad.index[bad.any(axis=1)]
        row = rows[0]
        column = bad.columns[bad.loc[row]][0]
        raise DataError(
            f"{path}: {len(rows)} rows have labels that are not 0 or 1 (first: line {row + 2}, image "
            f"{frame.at[row, id_column]}, {column}={frame.at[row, column]!r}). "
            f"Each of {list(columns)} must be 0 or 1 (1.0/0.0 too): fix those cells or delete the rows."
        )
    return values.astype(float)


def _one_positive(values: pd.DataFrame, path: Path, ids: pd.Series, allow_none: bool = False) -> None:
    """A single-label source: one 1 per row among ``values``' columns (at most one with ``allow_none``)."""
    positives = values.sum(axis=1)
    bad = (positives > 1) | ((positives == 0) & (not allow_none))
    if bad.any():
        rows = bad.index[bad]
        what = "several classes" if positives[rows[0]] > 1 else "no class"
        raise DataError(
            f"{path}: {len(rows)} rows are not one-hot (first: {', '.join(ids[rows].astype(str)[:_SHOWN])}; "
            f"line {rows[0] + 2} marks {what}). Each image has one diagnosis: exactly one 1 among "
            f"{','.join(values.columns)}; fix those rows or use the official file."
        )


def _require_dir(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: folder not found. Point the source's root (data.root) at the folder of the download.")
    return path.resolve()


def _check_splits(splits: Sequence[str], where: str) -> None:
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"{where}: splits must be a non-empty subset of {list(SPLITS)}, got {list(splits)}.")


def canonical_image_id(names: pd.Series) -> pd.Series:
    """Ids without release suffixes (``ISIC_0000017_downsampled``) or copy markers (``x(1)``), so copies match."""
    return names.astype(str).str.strip().str.replace(_ID_SUFFIX, "", regex=True)


def _image_paths(names: pd.Series, folder: Path) -> pd.Series:
    """Absolute path of each named image in ``folder``, '' where absent (one listing, not a stat per row).

    Images in the folder that no row names are unused: their count and first names are logged, since a
    half-copied or mismatched ground truth file shows up this way.
    """
    if not folder.is_dir():
        return pd.Series("", index=names.index)
    index = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in IMAGE_SUFFIXES and not stem.endswith(_NOT_LESION_IMAGES):
                index[stem] = os.path.join(folder, entry.name)
    names = names.astype(str).str.strip()
    unlisted = sorted(set(index) - set(names))
    if unlisted:
        log.warning(
            "%s: %d images have no row in the ground truth and are not used (first: %s)",
            folder,
            len(unlisted),
            ", ".join(unlisted[:_SHOWN]),
        )
    return names.map(index).fillna("")


def _optional(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column some releases of a file lack (all missing when absent)."""
    return frame[column] if column in frame else pd.Series(np.nan, index=frame.index, dtype=object)


def _sex(values: pd.Series) -> pd.Series:
    cleaned = values.fillna("").astype(str).str.strip().str.lower()
    return cleaned.where(cleaned.isin(["male", "female"]), "")


def _site(values: pd.Series) -> pd.Series:
    cleaned = values.fillna("").astype(str).str.strip().str.lower()
    return cleaned.where(cleaned != "unknown", "")


def _one_hot(labels: pd.Series, classes: Sequence[str]) -> pd.DataFrame:
    """Targets from one class name per row, every class known; callers then forget what a row cannot know."""
    columns = {}
    for cls in classes:
        columns[cls] = (labels == cls).to_numpy(dtype=float)
        columns[known_column(cls)] = np.ones(len(labels))
    return pd.DataFrame(columns, index=labels.index)


def _forget(frame: pd.DataFrame, rows: pd.Series, classes: Sequence[str]) -> None:
    for cls in classes:
        frame.loc[rows, [cls, known_column(cls)]] = 0.0


def _finish(
    frame: pd.DataFrame, source: str, classes: Sequence[str] = ISIC_CLASSES, image_dirs: Sequence[Path] = ()
) -> pd.DataFrame:
    frame["source"] = source
    table = normalise_table(frame, classes)
    check_unique_ids(table, source)
    table.attrs[IMAGE_DIRS] = [str(folder) for folder in image_dirs]
    return table


_ISIC2017_SPLITS = {"train": "Training", "val": "Validation", "test": "Test_v2"}


def read_isic2017(root: str | Path, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """ISIC 2017 Part 3: ground truth, metadata and images of the requested splits.

    melanoma -> MEL, seborrheic keratosis -> BKL and SK, neither -> NV, and every row knows all eight classes: the
    2017 set holds only these three diagnoses, and ISIC 2019 labels NV each of the 1,838 "neither" images it
    shares with 2017 (of 1,843), so "neither" is a nevus, not "some other class".
    """
    root = _require_dir(root)
    _check_splits(splits, "read_isic2017")
    frames, image_dirs = [], []
    for split in splits:
        name = _ISIC2017_SPLITS[split]
        truth_path = root / f"ISIC-2017_{name}_Part3_GroundTruth.csv"
        truth = _read_csv(truth_path, ["image_id", "melanoma", "seborrheic_keratosis"], id_column="image_id")
        values = _binary_labels(truth, ["melanoma", "seborrheic_keratosis"], truth_path, "image_id")
        _one_positive(values, truth_path, truth["image_id"], allow_none=True)
        frame = pd.DataFrame({"image_id": canonical_image_id(truth["image_id"])})
        label = np.select([values["melanoma"] == 1, values["seborrheic_keratosis"] == 1], ["MEL", "BKL"], "NV")
        frame = frame.join(_one_hot(pd.Series(label, index=frame.index), ISIC_CLASSES))
        frame["SK"], frame[known_column("SK")] = values["seborrheic_keratosis"].to_numpy(dtype=float), 1.0
        meta_path = root / f"ISIC-2017_{name}_Data_metadata.csv"
        if meta_path.exists():
            meta = _read_csv(meta_path, ["image_id"], id_column="image_id")
            meta = pd.DataFrame(
                {
                    "image_id": canonical_image_id(meta["image_id"]),
                    "age": _optional(meta, "age_approximate"),
                    "sex": _sex(_optional(meta, "sex")),
                }
            )
            frame = frame.merge(meta, on="image_id", how="left")
        image_dirs.append(root / f"ISIC-2017_{name}_Data")
        frame["path"] = _image_paths(truth["image_id"], image_dirs[-1])
        frame["split"] = split
        frames.append(frame)
    return _finish(pd.concat(frames, ignore_index=True), "isic2017", LABELS, image_dirs=image_dirs)


_ISIC2018_SPLITS = {"train": "Training", "val": "Validation", "test": "Test"}
_ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def _isic2018_lesions(root: Path) -> pd.DataFrame:
    """Lesion ids (and HAM10000's age/sex/site) from whichever grouping files the download has."""
    parts = []
    ham = root / "HAM10000_metadata.csv"
    if ham.exists():
        meta = _read_csv(ham, ["lesion_id", "image_id"], id_column="image_id")
        parts.append(
            pd.DataFrame(
                {
                    "image_id": canonical_image_id(meta["image_id"]),
                    "lesion_id": meta["lesion_id"],
                    "age": _optional(meta, "age"),
                    "sex": _sex(_optional(meta, "sex")),
                    "site": _site(_optional(meta, "localization")),
                }
            )
        )
    for name in _ISIC2018_SPLITS.values():
        path = root / f"ISIC2018_Task3_{name}_LesionGroupings.csv"
        if path.exists():
            groups = _read_csv(path, ["image", "lesion_id"], id_column="image")
            parts.append(
                pd.DataFrame({"image_id": canonical_image_id(groups["image"]), "lesion_id": groups["lesion_id"]})
            )
    if not parts:
        return pd.DataFrame(columns=["image_id", "lesion_id"])
    return pd.concat(parts, ignore_index=True).drop_duplicates("image_id")


def read_isic2018(root: str | Path, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """ISIC 2018 Task 3 (HAM10000): the training split, plus validation/test where their ground truth is present.

    AKIEC means "actinic keratosis or intraepithelial carcinoma (SCC)": those rows know AKIEC positive and every
    other class negative except AK and SCC, which stay unknown (ISIC 2019 splits the 327 training AKIEC into 130 AK
    and 197 SCC). Every other row knows all eight classes and AKIEC, AK and SCC negative.
    """
    root = _require_dir(root)
    _check_splits(splits, "read_isic2018")
    frames, image_dirs = [], []
    for split in splits:
        name = _ISIC2018_SPLITS[split]
        truth_path = root / f"ISIC2018_Task3_{name}_GroundTruth.csv"
        if split != "train" and not truth_path.exists():
            log.info("isic2018: no %s ground truth at %s; the %s split is skipped", split, truth_path, split)
            continue
        truth = _read_csv(truth_path, ["image", *_ISIC2018_COLUMNS], id_column="image")
        one_hot = _binary_labels(truth, _ISIC2018_COLUMNS, truth_path, "image")
        _one_positive(one_hot, truth_path, truth["image"])
        label = one_hot.idxmax(axis=1)
        frame = pd.DataFrame({"image_id": canonical_image_id(truth["image"])}).join(_one_hot(label, ISIC_CLASSES))
        _forget(frame, label == "AKIEC", ("AK", "SCC"))
        frame["AKIEC"], frame[known_column("AKIEC")] = (label == "AKIEC").to_numpy(dtype=float), 1.0
        image_dirs.append(root / f"ISIC2018_Task3_{name}_Input")
        frame["path"] = _image_paths(truth["image"], image_dirs[-1])
        frame["split"] = split
        frames.append(frame)
    if not frames:
        raise DataError(f"{root}: no ISIC 2018 Task 3 ground truth for splits {list(splits)}.")
    table = pd.concat(frames, ignore_index=True).merge(_isic2018_lesions(root), on="image_id", how="left")
    return _finish(table, "isic2018", LABELS, image_dirs=image_dirs)


def read_isic2019(root: str | Path) -> pd.DataFrame:
    """ISIC 2019 training set: ground truth, metadata (lesion ids) and ``ISIC_2019_Training_Input``.

    Every row knows all eight classes (the ``UNK`` column is all zeros in the training set).
    """
    root = _require_dir(root)
    truth_path = root / "ISIC_2019_Training_GroundTruth.csv"
    truth = _read_csv(truth_path, ["image", *ISIC_CLASSES], id_column="image")
    # UNK (none of the eight) is all zeros in the training set; a row marking it knows every class negative
    one_hot = _binary_labels(truth, [*ISIC_CLASSES, *(["UNK"] if "UNK" in truth else [])], truth_path, "image")
    _one_positive(one_hot, truth_path, truth["image"])
    table = pd.DataFrame({"image": truth["image"].str.strip()})
    for cls in ISIC_CLASSES:
        table[cls] = one_hot[cls]
        table[known_column(cls)] = 1.0
    meta_path = root / "ISIC_2019_Training_Metadata.csv"
    if meta_path.exists():
        meta = _read_csv(meta_path, ["image"], id_column="image")
        meta = pd.DataFrame(
            {
                "image": meta["image"].str.strip(),
                "lesion_id": _optional(meta, "lesion_id"),
                "age": _optional(meta, "age_approx"),
                "sex": _sex(_optional(meta, "sex")),
                "site": _site(_optional(meta, "anatom_site_general")),
            }
        )
        table = table.merge(meta, on="image", how="left")
    image_dir = root / "ISIC_2019_Training_Input"
    table["path"] = _image_paths(table["image"], image_dir)
    table["image_id"] = canonical_image_id(table["image"])
    table["split"] = "train"
    return _finish(table, "isic2019", image_dirs=[image_dir])


_ISIC2020_TRUTH = ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv", "train.csv")
_ISIC2020_IMAGES = ("train", "ISIC_2020_Training_JPEG/train", "ISIC_2020_Training_JPEG")
ISIC2020_DIAGNOSES: dict[str, str] = {
    "melanoma": "MEL",
    "nevus": "NV",
    "seborrheic keratosis": "BKL",
    "lentigo nos": "BKL",
    "lichenoid keratosis": "BKL",
    "solar lentigo": "BKL",
}


def drop_listed_duplicates(table: pd.DataFrame, pairs_csv: str | Path) -> tuple[pd.DataFrame, int]:
    """Drop the second image of each listed pair (the official list of the same lesion photographed twice)."""
    pairs = _read_csv(Path(pairs_csv), ["image_name_1", "image_name_2"])
    first, second = canonical_image_id(pairs["image_name_1"]), canonical_image_id(pairs["image_name_2"])
    doomed = set(second[first.isin(table["image_id"])])
    keep = ~table["image_id"].isin(doomed)
    return table[keep].reset_index(drop=True), int((~keep).sum())


def read_isic2020(root: str | Path, drop_duplicates: bool = True) -> pd.DataFrame:
    """SIIM-ISIC 2020 training set, grouped by patient, minus the official duplicates.

    Diagnoses in ``ISIC2020_DIAGNOSES`` (nevus, melanoma, and seborrheic keratosis / lentigo NOS / lichenoid
    keratosis / solar lentigo as BKL) know all eight classes. Every other diagnosis ('unknown' for 27,124
    rows, 'atypical melanocytic proliferation', 'cafe-au-lait macule') is known only as "not melanoma" from
    ``target``: MEL known, the rest unknown, since the lesion may be any of them or none.
    """
    root = _require_dir(root)
    truth_path = next((root / n for n in _ISIC2020_TRUTH if (root / n).exists()), root / _ISIC2020_TRUTH[0])
    truth = _read_csv(truth_path, ["image_name", "target"], id_column="image_name")
    diagnosis = _optional(truth, "diagnosis").fillna("unknown")
    mapped = diagnosis.astype(str).str.strip().str.lower().map(ISIC2020_DIAGNOSES)
    melanoma = _binary_labels(truth, ["target"], truth_path, "image_name")["target"] == 1
    contradicted = mapped.notna() & ((mapped == "MEL") != melanoma)
    if contradicted.any():
        shown = ", ".join(truth["image_name"][contradicted].astype(str)[:5])
        raise DataError(f"{truth_path}: diagnosis and target disagree on {contradicted.sum()} rows (first: {shown}).")
    label = mapped.where(mapped.notna(), np.where(melanoma, "MEL", ""))
    frame = pd.DataFrame({"image_id": canonical_image_id(truth["image_name"])}).join(_one_hot(label, ISIC_CLASSES))
    _forget(frame, label == "", [c for c in ISIC_CLASSES if c != "MEL"])
    frame["patient_id"] = _optional(truth, "patient_id")
    frame["lesion_id"] = _optional(truth, "lesion_id")
    frame["age"] = _optional(truth, "age_approx")
    frame["sex"] = _sex(_optional(truth, "sex"))
    frame["site"] = _site(_optional(truth, "anatom_site_general_challenge"))
    image_dir = next((root / d for d in _ISIC2020_IMAGES if (root / d).is_dir()), root / _ISIC2020_IMAGES[0])
    frame["path"] = _image_paths(truth["image_name"], image_dir)
    frame["split"] = "train"
    dropped = 0
    duplicates = root / "ISIC_2020_Training_Duplicates.csv"
    if drop_duplicates and duplicates.exists():
        frame, dropped = drop_listed_duplicates(frame, duplicates)
        log.info("isic2020: dropped %d images listed in %s", dropped, duplicates.name)
    table = _finish(frame, "isic2020", image_dirs=[image_dir])
    table.attrs[DUPLICATES_DROPPED] = dropped
    return table


_FOLDER_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_SPLIT_RANK = {"test": 0, "val": 1, "train": 2}


def _split_dirs(root: Path) -> list[tuple[str, Path]]:
    found = [(_FOLDER_SPLITS[d.name.lower()], d) for d in sorted(root.iterdir()) if d.name.lower() in _FOLDER_SPLITS]
    found = [(split, d) for split, d in found if d.is_dir()]
    if not found:
        raise DataError(
            f"{root}: no Train/ or Test/ folder (found {sorted(p.name for p in root.iterdir())}). "
            "A folder dataset needs Train/<class>/*.jpg and/or Test/<class>/*.jpg."
        )
    return found


def folder_classes(root: str | Path) -> list[str]:
    """The class folder names of a folder dataset, lower-cased and sorted: its own label set."""
    root = _require_dir(root)
    return sorted({d.name.lower() for _, split_dir in _split_dirs(root) for d in split_dir.iterdir() if d.is_dir()})


def _folder_lookup(classes: Sequence[str], mapping: Mapping[str, str] | None) -> dict[str, str]:
    lookup = {name: cls for name, cls in FOLDER_NAME_TO_CLASS.items() if cls in classes}
    lookup.update({cls.lower(): cls for cls in classes})
    for name, cls in (mapping or {}).items():
        if cls not in classes:
            raise ConfigError(f"folder mapping {name!r} -> {cls!r}: {cls!r} is not one of the classes {list(classes)}.")
        lookup[name.lower()] = cls
    return lookup


def _file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.blake2b(handle.read()).hexdigest()


def drop_identical_files(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one row per set of byte-identical files (``path``): a test copy over a train copy, so no copy
    leaks, then the shortest name (``x.jpg`` over ``x(1).jpg``). The kept row's ``labels`` holds the class
    folders of every copy: more than one means the set contradicts itself about that image."""
    shared_size = frame["path"].map(os.path.getsize).duplicated(keep=False)
    digest = pd.Series([f"unique-size:{i}" for i in range(len(frame))], index=frame.index)
    digest[shared_size] = [_file_digest(p) for p in track(frame["path"][shared_size], "hashing", transient=True)]
    labels = frame.groupby(digest)["label"].agg(lambda copies: tuple(sorted(set(copies))))
    ranked = frame.assign(
        _digest=digest, _rank=frame["split"].map(_SPLIT_RANK), _length=frame["path"].map(lambda p: len(Path(p).stem))
    ).sort_values(["_rank", "_length", "path"])
    kept = ranked.drop_duplicates("_digest").sort_index()
    kept["labels"] = kept["_digest"].map(labels)
    return kept.drop(columns=["_digest", "_rank", "_length"]), len(frame) - len(kept)


def read_folder(
    root: str | Path,
    classes: Sequence[str] | str = ISIC_CLASSES,
    mapping: Mapping[str, str] | None = None,
    source: str = "folder",
) -> pd.DataFrame:
    """A class-per-folder set (``Train/<class>/*.jpg``, ``Test/<class>/*.jpg``); every row knows every class.

    Folder names map case-insensitively to ``classes`` through ``mapping``, then FOLDER_NAME_TO_CLASS, then the
    class names themselves; ``classes="folders"`` makes the folder names the label set (see folder_classes).
    Files named like an ISIC id keep it as image_id, so they match the ISIC sources; other files get
    ``<source>:<relative path>`` so two folder sets never collide. Byte-identical copies become one row (see
    drop_identical_files); where the copies sit in different class folders, those classes are unknown for it
    and the others known negative, as for ISIC 2018's AKIEC.
    """
    root = _require_dir(root)
    if isinstance(classes, str) and classes != "folders":
        raise ConfigError(f"read_folder: classes must be a list of class names or 'folders', got {classes!r}.")
    labels = folder_classes(root) if classes == "folders" else list(classes)
    lookup = _folder_lookup(labels, mapping)
    rows = []
    for split, split_dir in _split_dirs(root):
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            label = lookup.get(class_dir.name.lower())
            if label is None:
                raise DataError(
                    f"{class_dir}: folder name {class_dir.name!r} is not a known class. Known names: {sorted(lookup)}. "
                    f"Pass a mapping, e.g. mapping={{{class_dir.name!r}: '<one of {labels}>'}}, "
                    "or classes='folders' to use the folder names as the labels."
                )
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{class_dir}: no .jpg/.jpeg/.png images. Add its images or remove the empty folder.")
            rows += [(str(p), split, label, p.relative_to(root).with_suffix("").as_posix(), p.stem) for p in files]
    if not rows:
        found = [d.name for _, d in _split_dirs(root)]
        raise DataError(f"{root}: no class folders in {found}; a folder dataset needs Train/<class>/*.jpg.")
    frame = pd.DataFrame(rows, columns=["path", "split", "label", "relative", "stem"])
    frame, dropped = drop_identical_files(frame)
    log.info("%s: dropped %d byte-identical duplicate files", source, dropped)
    stems = canonical_image_id(frame["stem"])
    frame["image_id"] = stems.where(stems.str.fullmatch(_ISIC_ID), source + ":" + frame["relative"])
    ambiguous = frame["labels"].map(len) > 1
    frame = frame.join(_one_hot(frame["label"].where(~ambiguous, ""), labels))
    for cls in labels:
        _forget(frame, ambiguous & frame["labels"].map(lambda copies, cls=cls: cls in copies), [cls])
    if ambiguous.any():
        log.warning(
            "%s: %d images sit byte-identical in two or more class folders (first: %s); "
            "the classes of those folders are unknown for them",
            source,
            ambiguous.sum(),
            ", ".join(frame["image_id"][ambiguous][:5]),
        )
    table = _finish(frame, source, labels)
    table.attrs[DUPLICATES_DROPPED] = dropped
    return table


SOURCES: dict[str, Callable[..., pd.DataFrame]] = {
    "isic2017": read_isic2017,
    "isic2018": read_isic2018,
    "isic2019": read_isic2019,
    "isic2020": read_isic2020,
    "folder": read_folder,
}


# Official files that tie images to lesions or patients; the leakage guard looks for them beside each download.
GROUPING_FILES: tuple[str, ...] = (
    "ISIC_2019_Training_Metadata.csv",
    "HAM10000_metadata.csv",
    *(f"ISIC2018_Task3_{name}_LesionGroupings.csv" for name in _ISIC2018_SPLITS.values()),
    *_ISIC2020_TRUTH,
)
_GROUPING_ID_COLUMNS = ("image", "image_id", "image_name")


def find_grouping_files(roots: Sequence[str | Path]) -> list[Path]:
    """The GROUPING_FILES in each of ``roots`` and in the folders beside it (the official downloads laid out
    side by side under one data folder, as the README shows)."""
    found: set[Path] = set()
    for root in roots:
        root = Path(os.path.abspath(root))  # as given: a linked download's neighbours are the link's
        for folder in [root, *(sorted(p for p in root.parent.iterdir() if p.is_dir()) if root.parent.is_dir() else [])]:
            found.update(path for name in GROUPING_FILES if (path := folder / name).is_file())
    return sorted(found)


def read_grouping(path: str | Path) -> pd.DataFrame:
    """``image_id, lesion_id, patient_id`` (empty where the file has none) from any CSV naming its images in an
    ``image``, ``image_id`` or ``image_name`` column and holding ``lesion_id`` and/or ``patient_id``."""
    path = Path(path)
    frame = _read_csv(path, [])
    id_column = next((c for c in _GROUPING_ID_COLUMNS if c in frame.columns), None)
    if id_column is None or not {"lesion_id", "patient_id"} & set(frame.columns):
        raise DataError(
            f"{path}: not a lesion grouping file; it needs an image column ({' or '.join(_GROUPING_ID_COLUMNS)}) "
            f"and lesion_id and/or patient_id, found {list(frame.columns)[:20]}. Point data.lesion_metadata at the "
            "ISIC 2019 training metadata, HAM10000_metadata.csv, an ISIC 2018 LesionGroupings file or the ISIC 2020 "
            "training ground truth."
        )
    return pd.DataFrame(
        {
            "image_id": canonical_image_id(frame[id_column]),
            **{column: _optional(frame, column).fillna("").str.strip() for column in ("lesion_id", "patient_id")},
        }
    )


def read_source(name: str, root: str | Path, **kwargs: object) -> pd.DataFrame:
    """Read one configured source by its registry name (``data.sources`` in the config)."""
    if name not in SOURCES:
        raise ConfigError(f"unknown data source {name!r}; valid names: {sorted(SOURCES)}.")
    reader = SOURCES[name]
    try:
        inspect.signature(reader).bind(root, **kwargs)
    except TypeError as error:
        options = [p for p in inspect.signature(reader).parameters if p != "root"]
        raise ConfigError(f"data source {name!r}: {error}; its options are {options}.") from None
    return reader(root, **kwargs)
