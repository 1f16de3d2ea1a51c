"""Grouped stratified folds on the real merged ISIC table and on random small tables."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melanoma_lit.data.folds import assign_folds, group_ids, load_or_create_folds, split_by_fold
from melanoma_lit.data.merge import merge_sources
from melanoma_lit.data.sources import read_isic2017, read_isic2018, read_isic2019, read_isic2020
from melanoma_lit.data.table import known_column, normalise_table, primary_label
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError

CLASSES = ("A", "B", "C")


@pytest.fixture(scope="module")
def merged(shared_data: Path) -> pd.DataFrame:
    tables = [read_isic2017(shared_data / "isic2017"), read_isic2018(shared_data / "isic2018")]
    return merge_sources([*tables, read_isic2019(shared_data / "isic2019")], allow_missing=True)[0]


@pytest.fixture(scope="module")
def merged_folds(merged: pd.DataFrame) -> pd.Series:
    return assign_folds(merged, num_folds=5, seed=0)


@pytest.fixture(scope="module")
def isic2017_rows(merged: pd.DataFrame) -> pd.DataFrame:
    """The 2,750 ISIC 2017 images of the merged table: repeated fold runs on a fifth of it keep the tests fast."""
    return merged[merged["source"] == "isic2017"]


@pytest.fixture(scope="module")
def isic2017_folds(isic2017_rows: pd.DataFrame) -> pd.Series:
    return assign_folds(isic2017_rows, num_folds=5, seed=0)


def folds_per(table: pd.DataFrame, folds: pd.Series, column: str) -> pd.Series:
    rows = table[column] != ""
    return folds[rows].groupby(table.loc[rows, column]).nunique()


def test_no_lesion_in_two_folds(merged: pd.DataFrame, merged_folds: pd.Series) -> None:
    assert (merged["lesion_id"] != "").sum() == 10_834
    assert folds_per(merged, merged_folds, "lesion_id").max() == 1
    assert sorted(merged_folds.unique()) == [0, 1, 2, 3, 4]


def test_folds_follow_the_class_mix(merged: pd.DataFrame, merged_folds: pd.Series) -> None:
    labels = primary_label(merged, ISIC_CLASSES)
    whole = labels.value_counts(normalize=True)
    common = labels.value_counts().index[labels.value_counts() >= 100]
    assert len(common) == len(ISIC_CLASSES)
    per_fold = pd.crosstab(labels, merged_folds, normalize="columns")
    assert (per_fold.loc[common].sub(whole[common], axis=0).abs() <= 0.02).all().all()
    sizes = merged_folds.value_counts()
    assert sizes.max() - sizes.min() <= 0.02 * len(merged)


def test_same_seed_same_folds_in_any_row_order(isic2017_rows: pd.DataFrame, isic2017_folds: pd.Series) -> None:
    table, folds = isic2017_rows, isic2017_folds
    assert len(table) == 2_750 and folds_per(table, folds, "lesion_id").max() == 1
    shuffled = table.sample(frac=1.0, random_state=1)
    assert assign_folds(shuffled, num_folds=5, seed=0).sort_index().equals(folds)
    assert not assign_folds(table, num_folds=5, seed=1).equals(folds)


def test_isic2020_folds_group_patients(shared_data: Path) -> None:
    table = read_isic2020(shared_data / "isic2020")
    folds = assign_folds(table, num_folds=5, seed=0)
    assert group_ids(table).nunique() == table["patient_id"].nunique() == 2_056
    assert folds_per(table, folds, "patient_id").max() == 1


def test_folds_file_is_written_once_and_reused(
    isic2017_rows: pd.DataFrame, isic2017_folds: pd.Series, tmp_path: Path
) -> None:
    table, path = isic2017_rows, tmp_path / "splits" / "folds.csv"
    assert load_or_create_folds(table, path, num_folds=5, seed=0).equals(isic2017_folds)  # same as another call
    saved = pd.read_csv(path)
    assert list(saved.columns) == ["image_id", "group", "fold", "num_folds", "seed"]
    assert saved["image_id"].tolist() == table["image_id"].tolist()
    lock = path.with_name(f".{path.name}.lock")  # held while one process writes the file, kept for the next
    assert sorted(tmp_path.joinpath("splits").iterdir()) == [lock, path]
    # a file edited by hand proves the second call reads it rather than recomputing
    saved.assign(fold=(saved["fold"] + 1) % 5).to_csv(path, index=False)
    reused = load_or_create_folds(table.iloc[::7], path, num_folds=5, seed=0)
    assert reused.equals((isic2017_folds.iloc[::7] + 1) % 5)


def test_folds_file_refuses_other_settings_or_new_images(merged: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "folds.csv"
    load_or_create_folds(merged.iloc[:500], path, num_folds=3, seed=0)
    with pytest.raises(DataError, match=r"num_folds=\[3\].*Delete"):
        load_or_create_folds(merged.iloc[:500], path, num_folds=5, seed=0)
    with pytest.raises(DataError, match=r"seed=\[0\]"):
        load_or_create_folds(merged.iloc[:500], path, num_folds=3, seed=7)
    with pytest.raises(DataError, match=f"no fold for 1 .*{merged['image_id'].iloc[500]}"):
        load_or_create_folds(merged.iloc[:501], path, num_folds=3, seed=0)


def small_table(labels: list[str], lesions: list[str], patients: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"image_id": [f"img{i}" for i in range(len(labels))], "lesion_id": lesions, "patient_id": patients}
    )
    for cls in CLASSES:
        frame[cls] = [float(label == cls) for label in labels]
        frame[known_column(cls)] = 1.0
    return normalise_table(frame, CLASSES)


def test_groups_join_lesions_through_patients() -> None:
    table = small_table(["A"] * 5, ["L1", "L1", "L2", "", ""], ["", "P", "P", "", "Q"])
    assert group_ids(table).tolist() == ["P", "P", "P", "img3", "Q"]


def test_too_many_folds_and_scarce_classes(caplog) -> None:
    table = small_table(["A", "A", "B", "C"], ["L1", "L1", "", ""], [""] * 4)
    with pytest.raises(ConfigError, match="only 3 lesion/patient groups"):
        assign_folds(table, num_folds=4, classes=CLASSES)
    with pytest.raises(ConfigError, match="at least 2"):
        assign_folds(table, num_folds=1, classes=CLASSES)
    with caplog.at_level(logging.WARNING):
        assign_folds(table, num_folds=3, classes=CLASSES)
    assert "fewer groups than the 3 folds" in caplog.text and "'B': 1" in caplog.text


def test_split_by_fold() -> None:
    table = small_table(["A", "B", "A", "B", "C", "C"], [""] * 6, [""] * 6)
    folds = assign_folds(table, num_folds=2, classes=CLASSES)
    train, val = split_by_fold(table, folds, 1)
    assert sorted([*train["image_id"], *val["image_id"]]) == sorted(table["image_id"])
    assert set(val["image_id"]) == set(table["image_id"][folds == 1]) and len(val) > 0
    everything, nothing = split_by_fold(table, folds, "all")
    assert everything.equals(table) and nothing.empty and list(nothing.columns) == list(table.columns)
    for bad in (2, "1", True):
        with pytest.raises(ConfigError, match=r"data\.fold"):
            split_by_fold(table, folds, bad)


@st.composite
def random_tables(draw):
    n = draw(st.integers(min_value=2, max_value=40))
    labels = draw(st.lists(st.sampled_from([*CLASSES, "?"]), min_size=n, max_size=n))
    lesions = draw(st.lists(st.sampled_from(["", "", "L1", "L2", "L3", "L4"]), min_size=n, max_size=n))
    patients = draw(st.lists(st.sampled_from(["", "", "", "P1", "P2"]), min_size=n, max_size=n))
    table = small_table(labels, lesions, patients)
    num_folds = draw(st.integers(min_value=2, max_value=max(2, min(5, group_ids(table).nunique()))))
    return table, num_folds, draw(st.integers(min_value=0, max_value=3))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_tables())
def test_random_tables_never_split_groups(case) -> None:
    table, num_folds, seed = case
    if group_ids(table).nunique() < num_folds:
        with pytest.raises(ConfigError):
            assign_folds(table, num_folds=num_folds, seed=seed, classes=CLASSES)
        return
    folds = assign_folds(table, num_folds=num_folds, seed=seed, classes=CLASSES)
    assert set(folds) == set(range(num_folds))
    for column in ("lesion_id", "patient_id"):
        assert (folds_per(table, folds, column) == 1).all()
    assert assign_folds(table, num_folds=num_folds, seed=seed, classes=CLASSES).equals(folds)
    reversed_rows = table.iloc[::-1]
    assert np.array_equal(assign_folds(reversed_rows, num_folds, seed, CLASSES).sort_index(), folds)
