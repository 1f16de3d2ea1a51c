"""Readers against the real ISIC copies (facts from shared/data/README.md) and small folder sets built here."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from melanoma_lit.data.sources import (
    DUPLICATES_DROPPED,
    ISIC2020_DIAGNOSES,
    SOURCES,
    folder_classes,
    read_folder,
    read_isic2017,
    read_isic2018,
    read_isic2019,
    read_isic2020,
    read_source,
)
from melanoma_lit.data.table import known_column, known_mask, primary_label, table_columns, targets
from melanoma_lit.data.taxonomy import ISIC_CLASSES, LABELS
from melanoma_lit.errors import ConfigError, DataError

OTHER_THAN_MEL = [c for c in ISIC_CLASSES if c != "MEL"]


@pytest.fixture(scope="module")
def isic2017(shared_data: Path) -> pd.DataFrame:
    return read_isic2017(shared_data / "isic2017")


@pytest.fixture(scope="module")
def isic2018(shared_data: Path) -> pd.DataFrame:
    return read_isic2018(shared_data / "isic2018")


@pytest.fixture(scope="module")
def isic2019(shared_data: Path) -> pd.DataFrame:
    return read_isic2019(shared_data / "isic2019")


@pytest.fixture(scope="module")
def isic2020(shared_data: Path) -> pd.DataFrame:
    return read_isic2020(shared_data / "isic2020")


@pytest.fixture(scope="module")
def folder9(shared_data: Path) -> pd.DataFrame:
    return read_folder(shared_data / "folder_9class")


def assert_schema(table: pd.DataFrame, classes=ISIC_CLASSES) -> None:
    assert list(table.columns) == table_columns(classes)
    assert table["image_id"].is_unique
    assert not table["image_id"].str.endswith("_downsampled").any()


def test_isic2017_has_all_splits_with_images(isic2017: pd.DataFrame) -> None:
    assert_schema(isic2017, LABELS)  # + seborrheic keratosis (SK), AKIEC unknown
    assert isic2017["split"].value_counts().to_dict() == {"train": 2000, "val": 150, "test": 600}
    assert all(os.path.isabs(p) and os.path.exists(p) for p in isic2017["path"])
    assert set(isic2017["source"]) == {"isic2017"}


def test_isic2017_labels_are_three_diagnoses_all_known(isic2017: pd.DataFrame, shared_data: Path) -> None:
    assert (known_mask(isic2017, ISIC_CLASSES) == 1).all()
    assert (targets(isic2017, ISIC_CLASSES).sum(axis=1) == 1).all()
    truth = pd.read_csv(shared_data / "isic2017" / "ISIC-2017_Test_v2_Part3_GroundTruth.csv")
    test = isic2017[isic2017["split"] == "test"].set_index("image_id").loc[truth["image_id"]]
    assert (test["MEL"].to_numpy() == truth["melanoma"].to_numpy()).all()
    assert (test["BKL"].to_numpy() == truth["seborrheic_keratosis"].to_numpy()).all()
    neither = (truth["melanoma"] == 0) & (truth["seborrheic_keratosis"] == 0)
    assert (test["NV"].to_numpy() == neither.to_numpy()).all()


def test_isic2017_neither_is_always_nevus_in_2019(isic2017: pd.DataFrame, isic2019: pd.DataFrame) -> None:
    """The evidence for read_isic2017 knowing all eight classes: 2019 calls every shared 'neither' image NV."""
    neither = isic2017[isic2017["NV"] == 1]
    in_2019 = isic2019.set_index("image_id").reindex(neither["image_id"]).dropna(subset=["NV"])
    assert len(neither) == 1843 and len(in_2019) == 1838
    assert (primary_label(in_2019, ISIC_CLASSES) == "NV").all()


def test_isic2017_metadata(isic2017: pd.DataFrame, shared_data: Path) -> None:
    meta = pd.read_csv(shared_data / "isic2017" / "ISIC-2017_Training_Data_metadata.csv")
    train = isic2017[isic2017["split"] == "train"]
    assert set(train["sex"]) == {"male", "female", ""}
    assert (train["sex"] == "").sum() == (meta["sex"] == "unknown").sum()
    assert train["age"].isna().sum() == (meta["age_approximate"] == "unknown").sum()
    assert train.set_index("image_id").at["ISIC_0000000", "age"] == 55.0
    assert isic2017.loc[isic2017["split"] == "test", "age"].isna().all()  # no test metadata in the download


def test_isic2017_reads_requested_splits_only(shared_data: Path) -> None:
    table = read_isic2017(shared_data / "isic2017", splits=("val",))
    assert len(table) == 150 and set(table["split"]) == {"val"}
    with pytest.raises(ConfigError, match="holdout"):
        read_isic2017(shared_data / "isic2017", splits=("holdout",))


def test_isic2018_training_set(isic2018: pd.DataFrame, shared_data: Path) -> None:
    assert_schema(isic2018, LABELS)  # + AKIEC, SK unknown
    assert len(isic2018) == 10_015 and set(isic2018["split"]) == {"train"}
    assert all(os.path.exists(p) for p in isic2018["path"])
    assert (isic2018["lesion_id"] != "").all() and isic2018["lesion_id"].nunique() == 7_470
    ham = pd.read_csv(shared_data / "isic2018" / "HAM10000_metadata.csv").set_index("image_id")
    row = isic2018.set_index("image_id").loc["ISIC_0027419"]
    assert row["lesion_id"] == ham.at["ISIC_0027419", "lesion_id"] == "HAM_0000118"
    assert (row["age"], row["sex"], row["site"]) == (80.0, "male", "scalp")


def test_isic2018_akiec_leaves_ak_and_scc_unknown(isic2018: pd.DataFrame) -> None:
    mask = known_mask(isic2018, ISIC_CLASSES)
    akiec = mask.sum(axis=1) < len(ISIC_CLASSES)
    assert akiec.sum() == 327
    rows = isic2018[akiec]
    assert (rows[["known_AK", "known_SCC"]] == 0).all().all()
    others = [c for c in ISIC_CLASSES if c not in ("AK", "SCC")]
    assert (rows[[known_column(c) for c in others]] == 1).all().all()
    assert (targets(rows, ISIC_CLASSES) == 0).all()
    assert (rows["AKIEC"] == 1).all() and (isic2018.loc[~akiec, "AKIEC"] == 0).all()
    assert (isic2018["known_AKIEC"] == 1).all()
    rest = isic2018[~akiec]
    assert (rest[["AK", "SCC"]] == 0).all().all() and (targets(rest, ISIC_CLASSES).sum(axis=1) == 1).all()


def write_isic2018(root: Path, split: str, rows: dict[str, str]) -> None:
    inputs = root / f"ISIC2018_Task3_{split}_Input"
    inputs.mkdir(parents=True)
    columns = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    truth = pd.DataFrame([{"image": i, **{c: float(c == label) for c in columns}} for i, label in rows.items()])
    truth.to_csv(root / f"ISIC2018_Task3_{split}_GroundTruth.csv", index=False)
    for image_id in rows:
        (inputs / f"{image_id}.jpg").write_bytes(image_id.encode())


def test_isic2018_official_lesion_groupings_and_validation_split(tmp_path: Path) -> None:
    write_isic2018(tmp_path, "Training", {"ISIC_0000001": "NV", "ISIC_0000002": "AKIEC"})
    write_isic2018(tmp_path, "Validation", {"ISIC_0000003": "MEL"})
    pd.DataFrame(
        {"image": ["ISIC_0000001", "ISIC_0000002"], "lesion_id": ["HAM_1", "HAM_1"], "diagnosis_confirm_type": "histo"}
    ).to_csv(tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    table = read_isic2018(tmp_path).set_index("image_id")
    assert table["split"].to_dict() == {"ISIC_0000001": "train", "ISIC_0000002": "train", "ISIC_0000003": "val"}
    assert table["lesion_id"].to_dict() == {"ISIC_0000001": "HAM_1", "ISIC_0000002": "HAM_1", "ISIC_0000003": ""}
    assert table.at["ISIC_0000003", "MEL"] == 1 and table.at["ISIC_0000002", "known_SCC"] == 0
    with pytest.raises(DataError, match="splits"):
        read_isic2018(tmp_path, splits=("test",))


def test_isic2018_rejects_rows_that_are_not_one_hot(tmp_path: Path) -> None:
    write_isic2018(tmp_path, "Training", {"ISIC_0000001": "NV"})
    truth = pd.read_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv").assign(MEL=1.0)
    truth.to_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match="ISIC_0000001"):
        read_isic2018(tmp_path)


def test_isic2019_facts(isic2019: pd.DataFrame, shared_data: Path) -> None:
    assert_schema(isic2019)
    truth = pd.read_csv(shared_data / "isic2019" / "ISIC_2019_Training_GroundTruth.csv")
    assert len(isic2019) == len(truth) == 25_331
    assert (truth["UNK"] == 0).all()
    assert (isic2019["lesion_id"] == "").sum() == 2_084
    suffixed = truth["image"][truth["image"].str.endswith("_downsampled")]
    assert len(suffixed) == 2_074 and "ISIC_0000017" in set(isic2019["image_id"])
    assert set(suffixed.str.removesuffix("_downsampled")) <= set(isic2019["image_id"])
    assert (known_mask(isic2019, ISIC_CLASSES) == 1).all()
    assert (isic2019["path"] == "").all()  # the shared copy has no 2019 image folder


def test_isic2020_rows_and_official_duplicates(isic2020: pd.DataFrame, shared_data: Path) -> None:
    every_row = read_isic2020(shared_data / "isic2020", drop_duplicates=False)
    assert len(every_row) == 33_126 and every_row.attrs[DUPLICATES_DROPPED] == 0
    pairs = pd.read_csv(shared_data / "isic2020" / "ISIC_2020_Training_Duplicates.csv")
    assert len(pairs) == 425
    assert isic2020.attrs[DUPLICATES_DROPPED] == 425 and len(isic2020) == 33_126 - 425
    assert not isic2020["image_id"].isin(pairs["image_name_2"]).any()
    assert isic2020["image_id"].isin(pairs["image_name_1"]).sum() == 425
    assert_schema(isic2020)
    assert (isic2020["patient_id"] != "").all() and (isic2020["lesion_id"] != "").all()


def test_isic2020_diagnoses(isic2020: pd.DataFrame, shared_data: Path) -> None:
    truth = pd.read_csv(shared_data / "isic2020" / "ISIC_2020_Training_GroundTruth_v2.csv").set_index("image_name")
    diagnosis = truth["diagnosis"].str.lower()
    unmapped = set(diagnosis) - set(ISIC2020_DIAGNOSES)
    assert unmapped == {"unknown", "atypical melanocytic proliferation", "cafe-au-lait macule"}
    table = isic2020.set_index("image_id")
    rows_diagnosis = diagnosis.loc[table.index]
    assert (table["MEL"] == truth.loc[table.index, "target"]).all() and (table["known_MEL"] == 1).all()
    only_mel = table[rows_diagnosis.isin(unmapped)]
    assert len(only_mel) == 26_708 and (only_mel[[known_column(c) for c in OTHER_THAN_MEL]] == 0).all().all()
    lentigo = table[rows_diagnosis == "lentigo nos"]
    assert len(lentigo) == 44 and (primary_label(lentigo, ISIC_CLASSES) == "BKL").all()
    assert (known_mask(lentigo, ISIC_CLASSES) == 1).all()


def test_folder_9class_counts_and_duplicates(folder9: pd.DataFrame, shared_data: Path) -> None:
    root = shared_data / "folder_9class"
    assert len(list((root / "Train").rglob("*.jpg"))) == 2241 and len(list((root / "Test").rglob("*.jpg"))) == 118
    copies = sorted(root.rglob("*(1).jpg"))
    assert len(copies) == 2
    for copy in copies:
        assert copy.read_bytes() == copy.with_name(copy.name.replace("(1)", "")).read_bytes()
        assert copy.stem.replace("(1)", "") in set(folder9["image_id"])
    # measured: beyond the two '(1)' copies, 155 ISIC images sit byte-identical in two class folders
    # (78 melanoma & seborrheic keratosis, 77 actinic keratosis & nevus) and 2 pairs of ids share bytes
    assert folder9.attrs[DUPLICATES_DROPPED] == 159 and len(folder9) == 2241 + 118 - 159
    assert folder9["image_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert_schema(folder9)


def test_folder_9class_contradicting_copies_are_unknown(folder9: pd.DataFrame) -> None:
    ambiguous = folder9[known_mask(folder9, ISIC_CLASSES).sum(axis=1) == len(ISIC_CLASSES) - 2]
    assert len(ambiguous) == 155
    assert (targets(ambiguous, ISIC_CLASSES) == 0).all()
    unknown_pairs = ambiguous[[known_column(c) for c in ISIC_CLASSES]].apply(
        lambda row: tuple(c for c in ISIC_CLASSES if row[known_column(c)] == 0), axis=1
    )
    assert unknown_pairs.value_counts().to_dict() == {("MEL", "BKL"): 78, ("NV", "AK"): 77}
    assert (ambiguous["split"] == "test").sum() == 18  # copies in Train and Test: the test copy is kept
    clear = folder9.drop(ambiguous.index)
    assert (known_mask(clear, ISIC_CLASSES) == 1).all() and (targets(clear, ISIC_CLASSES).sum(axis=1) == 1).all()


def test_folder_9class_with_folder_names_as_labels(shared_data: Path) -> None:
    names = folder_classes(shared_data / "folder_9class")
    assert len(names) == 9 and names == sorted(names) and "pigmented benign keratosis" in names
    table = read_folder(shared_data / "folder_9class", classes="folders")
    assert list(table.columns) == table_columns(names)
    assert set(primary_label(table, names)) == {*names, "?"}


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_folder_binary_set_uses_folder_names(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path,
        {"Train/Benign/1.jpg": b"a", "Train/Malignant/1.JPG": b"b", "Test/benign/2.png": b"c", "Train/notes.txt": b""},
    )
    table = read_folder(root, classes="folders", source="moles")
    assert sorted(table["image_id"]) == ["moles:Test/benign/2", "moles:Train/Benign/1", "moles:Train/Malignant/1"]
    labels = primary_label(table, ["benign", "malignant"]).set_axis(table["image_id"])
    assert labels["moles:Train/Malignant/1"] == "malignant" and labels["moles:Test/benign/2"] == "benign"
    assert table.set_index("image_id").at["moles:Test/benign/2", "split"] == "test"


def test_folder_mapping_and_unknown_names(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"Train/Melanoma/a.jpg": b"a", "Train/Mole/b.jpg": b"b"})
    with pytest.raises(DataError, match=r"'Mole'.*mapping"):
        read_folder(root)
    table = read_folder(root, mapping={"mole": "NV"})
    assert primary_label(table, ISIC_CLASSES).tolist() == ["MEL", "NV"]
    with pytest.raises(ConfigError, match="MOLE"):
        read_folder(root, mapping={"mole": "MOLE"})


def test_folder_empty_class_and_missing_layout(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "set", {"Train/nevus/a.jpg": b"a"})
    (root / "Train" / "melanoma").mkdir()
    with pytest.raises(DataError, match="melanoma"):
        read_folder(root)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="Train"):
        read_folder(tmp_path / "flat")
    (tmp_path / "flat" / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        read_folder(tmp_path / "flat")


def test_folder_identical_files_keep_test_copy_and_unknown_labels(tmp_path: Path, caplog) -> None:
    root = write_folder(
        tmp_path,
        {
            "Train/nevus/ISIC_0000001.jpg": b"same",
            "Test/nevus/ISIC_0000001(1).jpg": b"same",
            "Train/melanoma/ISIC_0000002.jpg": b"twin",
            "Train/nevus/ISIC_0000002.jpg": b"twin",
            "Train/nevus/ISIC_0000003.jpg": b"size",  # same size as the twins, different bytes
        },
    )
    with caplog.at_level(logging.WARNING):
        table = read_folder(root).set_index("image_id")
    assert table.attrs[DUPLICATES_DROPPED] == 2 and len(table) == 3
    assert table.at["ISIC_0000001", "split"] == "test" and table.at["ISIC_0000001", "path"].endswith("(1).jpg")
    assert (table.at["ISIC_0000002", "known_MEL"], table.at["ISIC_0000002", "known_NV"]) == (0, 0)
    assert table.at["ISIC_0000002", "known_BCC"] == 1 and table.at["ISIC_0000003", "NV"] == 1
    assert "ISIC_0000002" in caplog.text


def test_registry_dispatches_and_explains_mistakes(tmp_path: Path, shared_data: Path) -> None:
    assert set(SOURCES) == {"isic2017", "isic2018", "isic2019", "isic2020", "folder"}
    table = read_source("isic2017", shared_data / "isic2017", splits=("val",))
    assert len(table) == 150
    with pytest.raises(ConfigError, match=r"isic2016.*isic2017"):
        read_source("isic2016", shared_data)
    with pytest.raises(ConfigError, match="splits"):
        read_source("isic2019", shared_data / "isic2019", splits=("train",))
    with pytest.raises(DataError, match="nowhere"):
        read_source("isic2019", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"ISIC_2019_Training_GroundTruth\.csv"):
        read_source("isic2019", tmp_path)
