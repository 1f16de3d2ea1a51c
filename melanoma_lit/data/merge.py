"""Combine the tables of several sources into one row per image, and keep held-out images out of training.

The ISIC years overlap heavily (2019 contains every 2018 and most 2017 images), so the same image arrives
from several sources; each knows some classes. The merged row knows what any source knows.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from melanoma_lit.data.sources import IMAGE_DIRS
from melanoma_lit.data.table import check_unique_ids, infer_labels, known_column, normalise_table
from melanoma_lit.data.taxonomy import ISIC_CLASSES, label_space
from melanoma_lit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Finer or more curated sources first: their known labels win a real disagreement. Sources not listed
# (folder sets) rank below, the later table in the list over the earlier.
SOURCE_PRECEDENCE: tuple[str, ...] = ("isic2019", "isic2018", "isic2017", "isic2020")
# The most held-out split any source gives an image wins: a 2017 test image stays test when 2019 has it too.
_SPLIT_RANK = {"train": 0, "val": 1, "test": 2}
_SHOWN = 5


@dataclass(frozen=True)
class LabelConflict:
    """Two sources that both know a class of one image and disagree."""

    image_id: str
    cls: str
    values: dict[str, float]
    kept_source: str


@dataclass
class MergeReport:
    rows_per_source: dict[str, int]
    overlaps: dict[tuple[str, str], int]
    n_matched: int
    conflicts: list[LabelConflict] = field(default_factory=list)
    n_missing_images: int = 0
    missing_ids: list[str] = field(default_factory=list)
    missing_per_source: dict[str, int] = field(default_factory=dict)
    n_rows: int = 0

    def summary(self) -> str:
        shared = ", ".join(f"{a}&{b}: {n}" for (a, b), n in self.overlaps.items() if n)
        return (
            f"merged {sum(self.rows_per_source.values())} rows from {self.rows_per_source} into {self.n_rows} images; "
            f"{self.n_matched} images in more than one source ({shared or 'none'}); "
            f"{len(self.conflicts)} label conflicts; {self.n_missing_images} images without a file dropped"
        )


def _priority(sources: pd.Series, position: int, n_tables: int) -> pd.Series:
    rank = sources.map({s: len(SOURCE_PRECEDENCE) - i for i, s in enumerate(SOURCE_PRECEDENCE)}).fillna(0)
    return rank * (n_tables + 1) + position


def _checked(table: pd.DataFrame, classes: Sequence[str], position: int) -> pd.DataFrame:
    """``table`` normalised (data.table), once it is one the merge can combine."""
    extra = sorted({str(c).removeprefix("known_") for c in table.columns if str(c).startswith("known_")} - set(classes))
    part = normalise_table(table, classes)
    where = f"table {position} ({', '.join(part['source'].unique()[:3])})"
    if extra:
        raise DataError(
            f"{where} has classes {extra} outside {list(classes)}. "
            "Read every source with the same class list, or map its folders onto it (read_folder mapping)."
        )
    bad_splits = sorted(set(part["split"]) - set(_SPLIT_RANK))
    if bad_splits:
        raise DataError(f"{where}: split values {bad_splits}; use one of {list(_SPLIT_RANK)}.")
    blank = part["image_id"].str.strip() == ""
    if blank.any():
        raise DataError(f"{where}: {blank.sum()} rows have no image_id. Every row must name its image.")
    check_unique_ids(part, where)
    return part


def _existing(paths: pd.Series) -> pd.Series:
    return paths.map(lambda p: p if p and os.path.exists(p) else "")


def _conflicts(stacked: pd.DataFrame, ids: pd.Index, cls: str) -> list[LabelConflict]:
    rows = stacked[stacked["image_id"].isin(ids) & (stacked[known_column(cls)] == 1)]
    found = []
    for image_id, group in rows.groupby("image_id", sort=True):
        values = dict(zip(group["source"], group[cls], strict=True))
        found.append(LabelConflict(image_id, cls, values, kept_source=group["source"].iloc[0]))
    return found


def _combine_labels(stacked: pd.DataFrame, merged: pd.DataFrame, classes: Sequence[str]) -> list[LabelConflict]:
    """Fill ``merged``'s targets and masks from the highest-priority source that knows each class."""
    conflicts = []
    for cls in classes:
        known = stacked[known_column(cls)] == 1
        values = stacked[cls].where(known).groupby(stacked["image_id"])
        merged[cls] = values.first().fillna(0.0)
        merged[known_column(cls)] = known.groupby(stacked["image_id"]).max().astype(float)
        disagree = values.nunique() > 1
        conflicts += _conflicts(stacked, disagree.index[disagree], cls)
    if conflicts:
        shown = "; ".join(f"{c.image_id} {c.cls} {c.values} kept {c.kept_source}" for c in conflicts[:_SHOWN])
        log.warning("merge: %d label conflicts between sources (first: %s)", len(conflicts), shown)
    return conflicts


def _missing_in(source: str, count: int, ids: pd.Index, folders: Sequence[str]) -> str:
    """``isic2019: 12571 (first: ...), looked in <folder> (which does not exist)`` for the missing-images message."""
    looked = ", ".join(f"{folder}{'' if os.path.isdir(folder) else ' (which does not exist)'}" for folder in folders)
    return f"{source}: {count} (first: {', '.join(ids[:_SHOWN])})" + (f", looked in {looked}" if looked else "")


def merge_sources(
    tables: Sequence[pd.DataFrame], classes: Sequence[str] = ISIC_CLASSES, allow_missing: bool = False
) -> tuple[pd.DataFrame, MergeReport]:
    """One row per image_id: each class takes the value of the highest-priority source that knows it
    (SOURCE_PRECEDENCE, then list order), so 2019's AK/SCC fill 2018's unknown AKIEC split; a real
    disagreement is reported, not hidden. Ids, metadata and the image path come from the highest-priority
    source that has them; the split is the most held-out one. Images with no file on disk are an error
    unless ``allow_missing``, which drops and counts them."""
    if not tables:
        raise ConfigError("merge_sources: no tables to merge; configure at least one data source.")
    parts, searched = [], {}
    for position, table in enumerate(tables):
        for source in table["source"].unique() if "source" in table else []:
            searched.setdefault(source, []).extend(table.attrs.get(IMAGE_DIRS, []))
        part = _checked(table, label_space(classes), position)
        part["_priority"] = _priority(part["source"], position, len(tables))
        parts.append(part)
    stacked = pd.concat(parts, ignore_index=True)
    stacked["path"] = _existing(stacked["path"])
    stacked = stacked.sort_values(["image_id", "_priority"], ascending=[True, False], kind="stable")
    # rows are in priority order, so first() is the highest-priority source that has a value
    text_columns = ["path", "lesion_id", "patient_id", "sex", "site"]
    grouped = stacked.assign(**{c: stacked[c].mask(stacked[c] == "") for c in text_columns}).groupby("image_id")
    merged = pd.DataFrame(index=grouped.size().index)
    for column in text_columns:
        merged[column] = grouped[column].first().fillna("")
    merged["age"] = grouped["age"].first()
    with_file = stacked[stacked["path"] != ""].drop_duplicates("image_id").set_index("image_id")["source"]
    merged["source"] = with_file.reindex(merged.index).fillna(grouped["source"].first())
    split_rank = stacked["split"].map(_SPLIT_RANK).groupby(stacked["image_id"]).max()
    merged["split"] = split_rank.map({rank: split for split, rank in _SPLIT_RANK.items()})

    conflicts = _combine_labels(stacked, merged, label_space(classes))
    ids_per_source = {s: set(g) for s, g in stacked.groupby("source")["image_id"]}
    report = MergeReport(
        rows_per_source={s: len(ids) for s, ids in ids_per_source.items()},
        overlaps={
            (a, b): len(ids_per_source[a] & ids_per_source[b]) for a, b in itertools.combinations(ids_per_source, 2)
        },
        n_matched=int((grouped.size() > 1).sum()),
        conflicts=conflicts,
    )
    missing = merged.index[merged["path"] == ""]
    if len(missing):
        per_source = merged.loc[missing, "source"].value_counts()
        report.n_missing_images, report.missing_ids = len(missing), list(missing[:_SHOWN])
        report.missing_per_source = {str(source): int(count) for source, count in per_source.items()}
        where = "; ".join(
            _missing_in(source, count, missing[merged.loc[missing, "source"] == source], searched.get(source, []))
            for source, count in per_source.items()
        )
        message = f"{len(missing)} of {len(merged)} images have no file on disk: {where}"
        if not allow_missing:
            raise DataError(
                f"{message}. Point each source's root at the folder that holds its images, "
                "or set data.allow_missing=true to drop them."
            )
        log.warning("%s; dropped (data.allow_missing=true)", message)
        merged = merged.drop(index=missing)
    table = normalise_table(infer_labels(merged.rename_axis("image_id").reset_index()), classes)
    report.n_rows = len(table)
    log.info(report.summary())
    return table, report


def with_known_groups(table: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its empty ``lesion_id`` / ``patient_id`` filled from ``groups`` (image_id, lesion_id,
    patient_id; the first non-empty id of an image wins), so the leakage guard sees every lesion the data knows:
    an ISIC 2017 test image has no lesion id in its own files, but the ISIC 2019 metadata gives it one."""
    table = table.copy()
    for column in ("lesion_id", "patient_id"):
        known = groups.loc[groups[column] != "", ["image_id", column]].drop_duplicates("image_id")
        found = table["image_id"].map(known.set_index("image_id")[column]).fillna("")
        table[column] = table[column].where(table[column] != "", found)
    return table


def remove_leakage(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop the train/val rows that share an image, a lesion or a patient with the test table: another
    photo of a test lesion (or patient) in training inflates test scores. Returns the rows kept and removed."""
    leaked = train["image_id"].isin(test["image_id"])
    for column in ("lesion_id", "patient_id"):
        held_out = set(test[column]) - {""}
        leaked |= train[column].isin(held_out)
    kept = train[~leaked].reset_index(drop=True)
    removed = int(leaked.sum())
    log.info(
        "leakage guard: removed %d of %d training rows that share an image, lesion or patient with the test set",
        removed,
        len(train),
    )
    return kept, removed
