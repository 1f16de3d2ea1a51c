"""Grouped, stratified k-fold assignment, saved once so every run of a sweep trains on the same folds."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.locks import exclusive
from melanoma_lit.data.table import primary_label
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FOLDS_COLUMNS: tuple[str, ...] = ("image_id", "group", "fold", "num_folds", "seed")


def group_ids(table: pd.DataFrame) -> pd.Series:
    """The group of each row: rows linked by a shared lesion_id or patient_id, directly or through a chain,
    form one group (2020 gives both; a patient's lesions must stay together). A row with neither is its own
    group. Each group is named by its smallest patient id, else lesion id, else image id."""
    n = len(table)
    lesions, n_lesions = _codes(table["lesion_id"])
    patients, _ = _codes(table["patient_id"])
    rows = np.arange(n)
    edges = [
        (rows[lesions >= 0], n + lesions[lesions >= 0]),
        (rows[patients >= 0], n + n_lesions + patients[patients >= 0]),
    ]
    sources = np.concatenate([e[0] for e in edges])
    targets = np.concatenate([e[1] for e in edges])
    size = n + n_lesions + int(patients.max(initial=-1)) + 1
    graph = coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    names = pd.DataFrame(
        {
            "component": component[:n],
            "rank": np.select([table["patient_id"] != "", table["lesion_id"] != ""], [0, 1], 2),
            "key": np.select(
                [table["patient_id"] != "", table["lesion_id"] != ""],
                [table["patient_id"], table["lesion_id"]],
                table["image_id"],
            ),
        }
    )
    first = names.sort_values(["rank", "key"]).drop_duplicates("component").set_index("component")["key"]
    return pd.Series(names["component"].map(first).to_numpy(), index=table.index, name="group")


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Integer code per non-empty value, -1 for empty."""
    codes, uniques = pd.factorize(values.where(values != ""))
    return codes, len(uniques)


def _assign(table: pd.DataFrame, groups: pd.Series, num_folds: int, seed: int, classes: Sequence[str]) -> pd.Series:
    if num_folds < 2:
        raise ConfigError(f"data.num_folds={num_folds}: k-fold needs at least 2 folds.")
    n_groups = groups.nunique()
    if num_folds > n_groups:
        raise ConfigError(
            f"data.num_folds={num_folds} but the table has only {n_groups} lesion/patient groups; "
            f"use at most {n_groups} folds."
        )
    labels = primary_label(table, classes)
    groups_per_class = groups.groupby(labels).nunique()
    scarce = groups_per_class[groups_per_class < num_folds]
    if len(scarce):
        fewest = int(scarce.min())
        fix = f"Lower data.num_folds to {fewest} to have every class in every fold, or add" if fewest >= 2 else "Add"
        log.warning(
            "classes with fewer groups than the %d folds, so some validation folds lack them and have no AUC for "
            "them: %s. %s images of those classes.",
            num_folds,
            scarce.to_dict(),
            fix,
        )
    strata = labels.to_numpy()
    if (labels.value_counts() < num_folds).all():
        strata = np.zeros(len(table))  # too few images of every class to stratify: plain grouped folds
    # sorted input makes the folds independent of row order
    order = np.lexsort((table["image_id"].to_numpy(), groups.to_numpy()))
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    folds = np.full(len(table), -1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = splitter.split(order, strata[order], groups.to_numpy()[order])
        for fold, (_, held_out) in enumerate(splits):
            folds[order[held_out]] = fold
    empty = sorted(set(range(num_folds)) - set(folds))
    if empty:
        raise ConfigError(f"data.num_folds={num_folds}: folds {empty} got no images; use fewer folds.")
    return pd.Series(folds, index=table.index, name="fold")


def assign_folds(
    table: pd.DataFrame, num_folds: int = 5, seed: int = 0, classes: Sequence[str] = ISIC_CLASSES
) -> pd.Series:
    """Fold index per row: no group (lesion/patient, see group_ids) straddles folds, each fold's primary-label
    mix follows the whole table's, and the same table and seed give the same folds in any row order."""
    return _assign(table, group_ids(table), num_folds, seed, classes)


def load_or_create_folds(
    table: pd.DataFrame,
    path: str | Path,
    num_folds: int = 5,
    seed: int = 0,
    classes: Sequence[str] = ISIC_CLASSES,
) -> pd.Series:
    """Folds saved in ``path`` (a CSV of FOLDS_COLUMNS), created on first use: every backbone of a sweep
    then trains and validates on identical folds. Made by one process of those that start together (the others wait
    and read it), and written atomically, so no run reads half a file."""
    path = Path(path)
    with exclusive(path.with_name(f".{path.name}.lock"), f"the folds file {path}"):
        if path.exists():
            return _load(table, path, num_folds, seed)
        return _create(table, path, num_folds, seed, classes)


def _create(table: pd.DataFrame, path: Path, num_folds: int, seed: int, classes: Sequence[str]) -> pd.Series:
    groups = group_ids(table)
    folds = _assign(table, groups, num_folds, seed, classes)
    frame = pd.DataFrame(
        {"image_id": table["image_id"], "group": groups, "fold": folds, "num_folds": num_folds, "seed": seed}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as partial:
        frame.to_csv(partial, index=False)
    log.info("wrote %d-fold split of %d images to %s", num_folds, len(table), path)
    return folds


def _load(table: pd.DataFrame, path: Path, num_folds: int, seed: int) -> pd.Series:
    saved = pd.read_csv(path, dtype={"image_id": str, "group": str})
    missing_columns = [c for c in FOLDS_COLUMNS if c not in saved]
    if missing_columns:
        raise DataError(f"{path}: missing column(s) {missing_columns}; delete the file to re-create the folds.")
    fix = f"Delete {path} to re-split (this changes every fold), or set a different folds path."
    saved_folds, saved_seeds = sorted(saved["num_folds"].unique().tolist()), sorted(saved["seed"].unique().tolist())
    if saved_folds != [num_folds] or saved_seeds != [seed]:
        raise DataError(
            f"{path} holds folds for num_folds={saved_folds}, seed={saved_seeds}, "
            f"but num_folds={num_folds}, seed={seed} were asked for. {fix}"
        )
    fold_of = saved.set_index("image_id")["fold"]
    unknown = table["image_id"][~table["image_id"].isin(fold_of.index)]
    if len(unknown):
        raise DataError(
            f"{path} has no fold for {len(unknown)} of the table's images (first: {', '.join(unknown[:5])}): "
            f"the data changed since the folds were made. {fix}"
        )
    log.info("reusing the %d-fold split in %s", num_folds, path)
    return pd.Series(table["image_id"].map(fold_of).to_numpy(dtype=int), index=table.index, name="fold")


def split_by_fold(table: pd.DataFrame, folds: pd.Series, fold: int | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) for one fold; ``fold="all"`` trains on every row and validates on none."""
    if fold == "all":
        return table.reset_index(drop=True), table.iloc[:0].reset_index(drop=True)
    existing = sorted(folds.unique())
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or fold not in existing:
        raise ConfigError(f"data.fold={fold!r}: use one of the folds {existing} or 'all'.")
    if not folds.index.equals(table.index):
        raise DataError("split_by_fold: the folds do not belong to this table (their index differs).")
    held_out = (folds == fold).to_numpy()
    return table[~held_out].reset_index(drop=True), table[held_out].reset_index(drop=True)
