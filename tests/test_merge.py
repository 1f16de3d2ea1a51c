"""Merging the overlapping ISIC years into one row per image, and the leakage guard."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from melanoma_lit.data.merge import merge_sources, remove_leakage
from melanoma_lit.data.sources import read_isic2017, read_isic2018, read_isic2019
from melanoma_lit.data.table import known_column, normalise_table, primary_label
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def years(shared_data: Path) -> list[pd.DataFrame]:
    return [
        read_isic2017(shared_data / "isic2017"),
        read_isic2018(shared_data / "isic2018"),
        read_isic2019(shared_data / "isic2019"),
    ]


@pytest.fixture(scope="module")
def merged(years: list[pd.DataFrame]):
    return merge_sources(years, allow_missing=True)


def test_one_row_per_image_with_files(merged) -> None:
    table, report = merged
    assert table["image_id"].is_unique
    # 2,745 of the 2017 images and all 10,015 HAM10000 images are in 2019, plus the 5 2017 images it lacks
    assert len(table) == report.n_rows == 12_765 > 12_700
    assert all(os.path.exists(p) for p in table["path"])
    assert report.n_missing_images == 25_336 - 12_765 and len(report.missing_ids) == 5
    assert report.rows_per_source == {"isic2017": 2_750, "isic2018": 10_015, "isic2019": 25_331}


def test_overlaps_between_years(merged) -> None:
    _, report = merged
    assert report.overlaps[("isic2017", "isic2019")] == 2_745
    assert report.overlaps[("isic2018", "isic2019")] == 10_015
    assert report.overlaps[("isic2017", "isic2018")] == 0
    assert report.n_matched == 2_745 + 10_015
    assert report.conflicts == []  # the years differ in granularity only


def test_ham10000_keeps_the_2019_lesion_ids(merged, years: list[pd.DataFrame]) -> None:
    table = merged[0].set_index("image_id")
    isic2018, isic2019 = years[1].set_index("image_id"), years[2].set_index("image_id")
    ham = isic2018.index
    assert len(ham) == 10_015
    assert (table.loc[ham, "lesion_id"] == isic2019.loc[ham, "lesion_id"]).all()
    assert (table.loc[ham, "lesion_id"] == isic2018.loc[ham, "lesion_id"]).all()
    assert (table.loc[ham, "source"] == "isic2018").all()


def test_2019_splits_the_akiec_images(merged, years: list[pd.DataFrame]) -> None:
    isic2018 = years[1]
    akiec = isic2018["image_id"][isic2018["known_AK"] == 0]
    assert len(akiec) == 327
    rows = merged[0].set_index("image_id").loc[akiec]
    assert primary_label(rows, ISIC_CLASSES).value_counts().to_dict() == {"SCC": 197, "AK": 130}
    assert (rows[[known_column(c) for c in ISIC_CLASSES]] == 1).all().all()


def test_2017_test_images_stay_test(merged, years: list[pd.DataFrame]) -> None:
    table = merged[0]
    test_ids = years[0]["image_id"][years[0]["split"] == "test"]
    assert len(test_ids) == 600
    assert set(table["image_id"][table["split"] == "test"]) == set(test_ids)
    assert table["split"].value_counts().to_dict() == {"train": 12_015, "test": 600, "val": 150}


def test_missing_images_are_an_error_by_default(years: list[pd.DataFrame]) -> None:
    folder = next(p for table in years for p in table.attrs["image_dirs"] if p.endswith("ISIC_2019_Training_Input"))
    expected = "12571 of 25336 images have no file on disk: isic2019: 12571 (first: ISIC_0000058, "
    with pytest.raises(
        DataError, match=re.escape(expected) + f".*looked in {re.escape(folder)} \\(which does not exist\\)"
    ):
        merge_sources(years)


def test_leakage_guard_removes_test_images_and_their_lesions(merged) -> None:
    table = merged[0]
    test = table[table["split"] == "test"]
    kept, removed = remove_leakage(table, test)
    test_lesions = set(test["lesion_id"]) - {""}
    assert len(test_lesions) == 149
    assert removed == len(table) - len(kept) == 604  # the 600 images and 4 more photos of their lesions
    assert not kept["image_id"].isin(test["image_id"]).any()
    assert not kept["lesion_id"].isin(test_lesions).any()
    assert (kept["split"] != "test").all()


def source_table(source: str, rows: list[dict], classes=("A", "B")) -> pd.DataFrame:
    """A small table; each row dict names the image, its known values ({class: 0/1}) and any other columns."""
    records = []
    for row in rows:
        record = {"source": source, "split": "train", **{k: v for k, v in row.items() if k != "labels"}}
        for cls in classes:
            value = row.get("labels", {}).get(cls)
            record[cls], record[known_column(cls)] = (0.0, 0.0) if value is None else (float(value), 1.0)
        records.append(record)
    return normalise_table(pd.DataFrame(records), classes)


@pytest.fixture()
def image(tmp_path: Path):
    def make(name: str) -> str:
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(name.encode())
        return str(path)

    return make


def test_known_values_combine_and_precedence_decides_conflicts(image, caplog) -> None:
    coarse = source_table(
        "isic2018", [{"image_id": "x", "labels": {"A": 1}, "path": image("x"), "lesion_id": "L1", "age": 40}]
    )
    fine = source_table("isic2019", [{"image_id": "x", "labels": {"A": 0, "B": 1}, "sex": "male"}])
    with caplog.at_level(logging.WARNING):
        table, report = merge_sources([fine, coarse], classes=("A", "B"))
    row = table.iloc[0]
    assert (row["A"], row["B"], row["known_A"], row["known_B"]) == (0, 1, 1, 1)
    assert (row["lesion_id"], row["sex"], row["age"], row["source"]) == ("L1", "male", 40, "isic2018")
    assert len(report.conflicts) == 1
    conflict = report.conflicts[0]
    assert (conflict.image_id, conflict.cls, conflict.kept_source) == ("x", "A", "isic2019")
    assert conflict.values == {"isic2019": 0.0, "isic2018": 1.0}
    assert "1 label conflicts" in caplog.text


def test_unlisted_sources_rank_by_list_order(image) -> None:
    first = source_table("mine", [{"image_id": "x", "labels": {"A": 1}, "path": image("x")}])
    second = source_table("theirs", [{"image_id": "x", "labels": {"A": 0}}])
    table, report = merge_sources([first, second], classes=("A", "B"))
    assert table.at[0, "A"] == 0 and report.conflicts[0].kept_source == "theirs"
    assert table.at[0, "source"] == "mine" and table.at[0, "known_B"] == 0


def test_held_out_split_wins_and_missing_files_are_dropped(image, caplog) -> None:
    test = source_table("a", [{"image_id": "x", "labels": {"A": 1}, "path": image("x"), "split": "test"}])
    train = source_table(
        "b", [{"image_id": "x", "labels": {"A": 1}}, {"image_id": "y", "labels": {"B": 1}, "path": "/gone/y.jpg"}]
    )
    with pytest.raises(DataError, match="1 of 2 images have no file on disk"):
        merge_sources([test, train], classes=("A", "B"))
    with caplog.at_level(logging.WARNING):
        table, report = merge_sources([train, test], classes=("A", "B"), allow_missing=True)
    assert table["image_id"].tolist() == ["x"] and table.at[0, "split"] == "test"
    assert (report.n_missing_images, report.missing_ids) == (1, ["y"])
    assert "dropped" in caplog.text


def test_merge_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="no tables"):
        merge_sources([])
    other = source_table("folder", [{"image_id": "x", "labels": {"C": 1}}], classes=("C",))
    with pytest.raises(DataError, match=r"\['C'\]"):
        merge_sources([other], classes=("A", "B"))
    twice = source_table("a", [{"image_id": "x"}, {"image_id": "x"}])
    with pytest.raises(DataError, match="more than once"):
        merge_sources([twice], classes=("A", "B"))


def test_leakage_guard_matches_patients_and_ignores_empty_ids() -> None:
    train = source_table(
        "a",
        [
            {"image_id": "p1", "patient_id": "P"},
            {"image_id": "l1", "lesion_id": "L"},
            {"image_id": "free"},
            {"image_id": "same"},
        ],
    )
    test = source_table("b", [{"image_id": "t1", "patient_id": "P", "lesion_id": "L"}, {"image_id": "same"}])
    kept, removed = remove_leakage(train, test)
    assert removed == 3 and kept["image_id"].tolist() == ["free"]


TASK3 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def test_isic2018_alone_knows_task3s_seven_classes_on_every_image(years: list[pd.DataFrame]) -> None:
    """The Task 3 label set read from HAM10000 alone: every image decided, AKIEC a class of its own."""
    table, _ = merge_sources([years[1]], classes=TASK3)
    assert len(table) == 10_015
    assert (table[[known_column(c) for c in TASK3]] == 1).all().all()
    assert {c: int(table[c].sum()) for c in TASK3} == {
        "MEL": 1113,
        "NV": 6705,
        "BCC": 514,
        "AKIEC": 327,
        "BKL": 1099,
        "DF": 115,
        "VASC": 142,
    }


def test_merged_years_know_the_union_and_subtype_classes_where_a_source_decides_them(
    merged, years: list[pd.DataFrame]
) -> None:
    """AKIEC = AK or SCC is known on every merged image (2019 splits HAM's AKIEC, the others know both parts);
    seborrheic keratosis (ISIC 2017) is known except on benign keratoses whose subtype no source gives."""
    pool = merged[0]
    space, _ = merge_sources(years, classes=[*TASK3, "AK", "SCC", "SK"], allow_missing=True)
    assert len(space) == len(pool)
    assert int(space[known_column("AKIEC")].sum()) == len(space)
    assert int(space["AKIEC"].sum()) == int(space["AK"].sum() + space["SCC"].sum()) == 327
    unknown_sk = space[space[known_column("SK")] == 0]
    assert len(unknown_sk) == 1099 and (unknown_sk["BKL"] == 1).all()
    assert int(space["SK"].sum()) == 386
