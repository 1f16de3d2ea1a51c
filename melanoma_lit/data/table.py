"""The one table every reader returns and every consumer reads.

One row per image. Columns:
- ``image_id``: canonical ISIC id (suffixes such as ``_downsampled`` stripped) or a
  source-unique name for non-ISIC files;
- ``path``: absolute image path, or empty string where the file is not on disk;
- ``source`` (e.g. ``isic2019``), ``split`` (``train``/``val``/``test``);
- ``lesion_id``, ``patient_id``: empty string where the source has none;
- ``age`` (float, NaN unknown), ``sex``, ``site`` (empty string unknown);
- one target column per class (float 0/1) and one ``known_<class>`` column
  (float 0/1): a class the source does not decide is unknown (mask 0), not negative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from melanoma_lit.data.taxonomy import SUBTYPE_CLASSES, UNION_CLASSES
from melanoma_lit.errors import DataError

ID_COLUMNS: tuple[str, ...] = ("image_id", "path", "source", "split", "lesion_id", "patient_id")
META_COLUMNS: tuple[str, ...] = ("age", "sex", "site")
_STRING_COLUMNS = (*ID_COLUMNS, "sex", "site")


def known_column(cls: str) -> str:
    return f"known_{cls}"


def table_columns(classes: Sequence[str]) -> list[str]:
    return [*ID_COLUMNS, *META_COLUMNS, *classes, *(known_column(c) for c in classes)]


def empty_table(classes: Sequence[str]) -> pd.DataFrame:
    return normalise_table(pd.DataFrame(columns=table_columns(classes)), classes)


def normalise_table(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Fill absent optional columns, fix dtypes and column order."""
    frame = frame.copy()
    for column in _STRING_COLUMNS:
        if column not in frame:
            frame[column] = ""
        values = frame[column]
        frame[column] = values.astype(str).where(values.notna(), "")  # not fillna: it would downcast mixed columns
    if "age" not in frame:
        frame["age"] = np.nan
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce").astype(float)
    for cls in classes:
        known = _binary(frame, known_column(cls), allow_missing=False)
        value = _binary(frame, cls, allow_missing=True)
        unset = value.isna() & (known == 1)
        if unset.any():
            raise DataError(
                f"table column {cls}: no value for image {frame['image_id'][unset].iloc[0]!r} although "
                f"{known_column(cls)} says it is known. Give it a 0/1 value or set its mask to 0."
            )
        frame[known_column(cls)], frame[cls] = known, value.fillna(0.0)
    return frame[table_columns(classes)].reset_index(drop=True)


def infer_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with what the taxonomy's class relations imply (data.taxonomy), so any label set can be read
    from any source: a union (AKIEC) is positive where a part is, negative where every part is, and a negative
    union makes its parts negative; a subtype (SK) makes its parent positive, a negative parent makes it negative.
    Only classes present in ``frame`` take part; a source contradicting itself is an error naming the image."""
    frame = frame.copy()

    def positive(cls: str) -> pd.Series:
        return (frame[known_column(cls)] == 1) & (frame[cls] == 1)

    def negative(cls: str) -> pd.Series:
        return (frame[known_column(cls)] == 1) & (frame[cls] == 0)

    def settle(cls: str, rows: pd.Series, value: float, because: str) -> None:
        clash = rows & (frame[known_column(cls)] == 1) & (frame[cls] != value)
        if clash.any():
            raise DataError(
                f"image {frame['image_id'][clash].iloc[0]!r}: {cls} is {1 - value:g} but {because} "
                f"({int(clash.sum())} such images). Correct the source's labels."
            )
        frame.loc[rows, [cls, known_column(cls)]] = (value, 1.0)

    for union, parts in UNION_CLASSES.items():
        if union not in frame or any(part not in frame for part in parts):
            continue
        any_part = np.logical_or.reduce([positive(part) for part in parts])
        every_part_negative = np.logical_and.reduce([negative(part) for part in parts])
        settle(union, any_part, 1.0, f"one of its parts {list(parts)} is positive")
        settle(union, every_part_negative, 0.0, f"all of its parts {list(parts)} are negative")
        union_negative = negative(union)
        for part in parts:
            settle(part, union_negative, 0.0, f"{union} is negative")
    for subtype, parent in SUBTYPE_CLASSES.items():
        if subtype not in frame or parent not in frame:
            continue
        settle(parent, positive(subtype), 1.0, f"its subtype {subtype} is positive")
        settle(subtype, negative(parent), 0.0, f"its parent class {parent} is negative")
    return frame


def _binary(frame: pd.DataFrame, column: str, allow_missing: bool) -> pd.Series:
    """A 0/1 float column (an absent column is all 0); ``allow_missing`` keeps empty cells as NaN."""
    if column not in frame:
        return pd.Series(0.0, index=frame.index)
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = ~values.isin([0.0, 1.0]) & (raw.notna() | (not allow_missing))
    if bad.any():
        raise DataError(
            f"table column {column}: value {raw[bad].iloc[0]!r} for image {frame['image_id'][bad].iloc[0]!r} "
            "is not 0 or 1. Targets and known_ masks hold 0/1 (a class a source does not decide has mask 0)."
        )
    return values


def targets(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    return frame[list(classes)].to_numpy(dtype=np.float32)


def known_mask(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    return frame[[known_column(c) for c in classes]].to_numpy(dtype=np.float32)


def primary_label(frame: pd.DataFrame, classes: Sequence[str]) -> pd.Series:
    """The single diagnosis of each row (first known positive class), '?' if none is known."""
    positives = frame[list(classes)].to_numpy() * frame[[known_column(c) for c in classes]].to_numpy()
    has_positive = positives.max(axis=1) > 0 if len(frame) else np.zeros(0, dtype=bool)
    labels = np.array(classes, dtype=object)[positives.argmax(axis=1)] if len(frame) else np.array([], dtype=object)
    return pd.Series(np.where(has_positive, labels, "?"), index=frame.index, name="primary_label")


def check_unique_ids(frame: pd.DataFrame, where: str) -> None:
    duplicated = frame["image_id"][frame["image_id"].duplicated()]
    if len(duplicated):
        shown = ", ".join(duplicated.unique()[:5])
        raise DataError(
            f"{where}: {duplicated.nunique()} image ids appear more than once (first: {shown}). "
            "Each image must have one row; remove the duplicate rows or merge them with melanoma_lit.data.merge."
        )
