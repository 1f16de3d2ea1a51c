"""The synthetic generator: official layouts, readable by the readers, deterministic, cached, and learnable."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from melanoma_lit.data.sources import read_isic2019
from melanoma_lit.data.synthetic import (
    COMPLETE_MARKER,
    DEFAULT_CLASS_FREQUENCIES,
    FOLDER_NAMES,
    ensure_synthetic,
    generate,
)
from melanoma_lit.data.synthetic.cohort import assign_splits, plan_lesions
from melanoma_lit.data.table import known_mask, primary_label, targets
from melanoma_lit.data.taxonomy import FOLDER_NAME_TO_CLASS, ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
ISIC_ID = re.compile(r"ISIC_\d{7}")


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def isic2019(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("isic2019"), n=60, size=64, seed=0, workers=1, progress=False)


def test_isic2019_files_and_columns_are_the_official_ones(isic2019):
    images = sorted(p.name for p in (isic2019 / "ISIC_2019_Training_Input").iterdir())
    assert len(images) == 60 and all(re.fullmatch(r"ISIC_\d{7}\.jpg", name) for name in images)
    assert {p.name for p in isic2019.iterdir()} == {
        "ISIC_2019_Training_Input",
        "ISIC_2019_Training_GroundTruth.csv",
        "ISIC_2019_Training_Metadata.csv",
        COMPLETE_MARKER,
    }
    truth = _rows(isic2019 / "ISIC_2019_Training_GroundTruth.csv")
    assert truth[0] == ["image", *ISIC_CLASSES, "UNK"]
    for row in truth[1:]:
        assert set(row[1:]) <= {"1.0", "0.0"} and row[1:9].count("1.0") == 1 and row[9] == "0.0"
    meta = _rows(isic2019 / "ISIC_2019_Training_Metadata.csv")
    assert meta[0] == ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    assert [r[0] for r in truth[1:]] == [r[0] for r in meta[1:]]
    assert sorted(f"{r[0]}.jpg" for r in truth[1:]) == images
    assert all(re.fullmatch(r"IL_\d{7}", r[3]) and r[4] in {"male", "female", ""} for r in meta[1:])
    with Image.open(isic2019 / "ISIC_2019_Training_Input" / images[0]) as image:
        assert image.format == "JPEG" and image.size == (64, 64) and image.mode == "RGB"
    marker = json.loads((isic2019 / COMPLETE_MARKER).read_text())
    assert marker["n"] == 60 and marker["size"] == [64, 64] and marker["layout"] == "isic2019"


def test_isic2019_headers_match_the_real_download(isic2019, shared_data):
    for name in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        assert _rows(isic2019 / name)[0] == _rows(shared_data / "isic2019" / name)[0]


def test_read_isic2019_reads_the_synthetic_set(isic2019):
    table = read_isic2019(isic2019)
    assert len(table) == 60 and table["image_id"].is_unique
    assert all(Path(p).is_file() for p in table["path"])
    y = targets(table, ISIC_CLASSES)
    assert set(np.unique(y)) == {0.0, 1.0} and (y.sum(axis=1) == 1).all()
    assert (known_mask(table, ISIC_CLASSES) == 1).all()
    assert table["lesion_id"].str.fullmatch(r"IL_\d{7}").all()
    views = table.groupby("lesion_id").size()
    assert views.max() > 1 and views.min() >= 1 and views.max() <= 4
    # a lesion is one diagnosis and one patient, whatever its photographs
    table["label"] = primary_label(table, ISIC_CLASSES)
    per_lesion = table.groupby("lesion_id")[["label", "age", "sex", "site"]].nunique(dropna=False)
    assert (per_lesion <= 1).all().all()
    assert table["age"].dropna().between(5, 85).all()


def test_photographs_of_one_lesion_differ(isic2019):
    table = read_isic2019(isic2019)
    lesion = table.groupby("lesion_id").filter(lambda g: len(g) > 1)["lesion_id"].iloc[0]
    paths = table.loc[table["lesion_id"] == lesion, "path"].tolist()
    pixels = [np.asarray(Image.open(p), dtype=float) for p in paths]
    assert np.abs(pixels[0] - pixels[1]).mean() > 2  # new pose and lighting, not a copy


def test_default_class_frequencies_are_followed(isic2019):
    counts = primary_label(read_isic2019(isic2019), ISIC_CLASSES).value_counts()
    for cls, frequency in DEFAULT_CLASS_FREQUENCIES.items():
        assert abs(counts.get(cls, 0) - 60 * frequency) <= 1, cls


def test_custom_class_frequencies(tmp_path):
    generate(tmp_path, n=20, size=32, class_frequencies={"MEL": 1, "VASC": 3}, workers=1, progress=False)
    counts = primary_label(read_isic2019(tmp_path), ISIC_CLASSES).value_counts().to_dict()
    assert counts == {"VASC": 15, "MEL": 5}


@pytest.fixture(scope="module")
def isic2017(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("isic2017"), n=80, size=48, layout="isic2017", workers=1, progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("folder"), n=80, size=40, layout="folder", workers=1, progress=False)


def test_isic2017_layout(isic2017):
    splits = {"Training": 0, "Validation": 0, "Test_v2": 0}
    seen: set[str] = set()
    for split in splits:
        truth = _rows(isic2017 / f"ISIC-2017_{split}_Part3_GroundTruth.csv")
        assert truth[0] == ["image_id", "melanoma", "seborrheic_keratosis"]
        ids = [r[0] for r in truth[1:]]
        assert all(ISIC_ID.fullmatch(i) for i in ids) and not seen & set(ids)
        seen |= set(ids)
        assert all(r[1] in {"0.0", "1.0"} and r[2] in {"0.0", "1.0"} and "0.0" in r[1:] for r in truth[1:])
        assert sorted(p.stem for p in (isic2017 / f"ISIC-2017_{split}_Data").iterdir()) == sorted(ids)
        splits[split] = len(ids)
    for split in ("Training", "Validation"):
        meta = _rows(isic2017 / f"ISIC-2017_{split}_Data_metadata.csv")
        assert meta[0] == ["image_id", "age_approximate", "sex"]
        assert all(r[1] == "unknown" or r[1].isdigit() for r in meta[1:])
        assert all(r[2] in {"male", "female", "unknown"} for r in meta[1:])
    assert sum(splits.values()) == 80
    assert splits["Training"] > splits["Test_v2"] > splits["Validation"] >= 1


def test_isic2017_has_only_its_three_classes(isic2017):
    rows = [r for p in isic2017.glob("*_Part3_GroundTruth.csv") for r in _rows(p)[1:]]
    melanoma = sum(r[1] == "1.0" for r in rows)
    keratosis = sum(r[2] == "1.0" for r in rows)
    # the default frequencies restricted to MEL, NV, BKL: 0.18 : 0.30 : 0.12
    assert (melanoma, len(rows) - melanoma - keratosis, keratosis) == (24, 40, 16)


def test_isic2017_files_match_the_real_download(isic2017, shared_data):
    real = shared_data / "isic2017"
    assert {p.name for p in isic2017.iterdir()} - {COMPLETE_MARKER} == {p.name for p in real.iterdir()}
    for name in (p.name for p in real.glob("*.csv")):
        assert _rows(isic2017 / name)[0] == _rows(real / name)[0]


def test_folder_layout(folder):
    assert {p.name for p in folder.iterdir()} == {"Train", "Test", COMPLETE_MARKER}
    counts = dict.fromkeys(ISIC_CLASSES, 0)
    for split in ("Train", "Test"):
        for class_dir in (folder / split).iterdir():
            assert FOLDER_NAMES[FOLDER_NAME_TO_CLASS[class_dir.name]] == class_dir.name
            images = list(class_dir.iterdir())
            assert images and all(ISIC_ID.fullmatch(p.stem) and p.suffix == ".jpg" for p in images)
            counts[FOLDER_NAME_TO_CLASS[class_dir.name]] += len(images)
    assert {p.name for p in (folder / "Train").iterdir()} == set(FOLDER_NAMES.values())
    assert 0 < len(list((folder / "Test").rglob("*.jpg"))) < 80 / 4
    assert counts == {"MEL": 14, "NV": 24, "BCC": 10, "AK": 6, "BKL": 10, "DF": 5, "VASC": 5, "SCC": 6}


def test_folder_class_names_match_the_real_download(folder, shared_data):
    real = {p.name for p in (shared_data / "folder_9class" / "Train").iterdir()}
    assert {p.name for p in (folder / "Train").iterdir()} <= real


def test_splits_keep_lesions_together_and_follow_shares():
    lesions = assign_splits(plan_lesions(2000, DEFAULT_CLASS_FREQUENCIES, 0), [("a", 0.7), ("b", 0.3)])
    assert len({(plan.index, plan.split) for plan in lesions}) == len({plan.index for plan in lesions})
    images = pd.DataFrame([(plan.cls, plan.split, plan.views) for plan in lesions], columns=["cls", "split", "n"])
    share = images.pivot_table(index="cls", columns="split", values="n", aggfunc="sum")
    assert ((share["a"] / share.sum(axis=1)).between(0.66, 0.74)).all()


def test_same_seed_same_bytes_in_any_order_other_seed_differs(tmp_path):
    serial = _files(generate(tmp_path / "a", n=24, size=48, seed=5, workers=1, progress=False))
    parallel = _files(generate(tmp_path / "b", n=24, size=48, seed=5, workers=2, progress=False))
    assert serial == parallel and len(serial) == 24 + 3
    other = _files(generate(tmp_path / "c", n=24, size=48, seed=6, workers=1, progress=False))
    assert other.keys() == serial.keys()
    assert sum(other[k] != serial[k] for k in serial if k.endswith(".jpg")) == 24


# sha256 of the sets generate() wrote before data/synthetic.py became a package (Pillow 13.0, numpy 2.4): a
# refactor must not change a byte. A Pillow upgrade with another libjpeg may change the JPEG bytes alone.
@pytest.mark.parametrize(
    ("layout", "n", "size", "expected"),
    [
        ("isic2019", 40, (64, 48), "f9db42041fc0d5204f53d320df8a74d83c528637e7f20abe4ba22d61e4c2230c"),
        ("isic2017", 24, 40, "dea11455de947a162b83ae5a462af287d69ab286f983491841fc4301c759cc9a"),
        ("folder", 24, 40, "ad77a36d6b1f86cec058d31b6ae797930fa25777c341fd9fbc10a09dd46d21a8"),
    ],
)
def test_the_generated_set_is_byte_identical_to_the_reference(tmp_path, layout, n, size, expected):
    out = generate(tmp_path, n=n, size=size, layout=layout, seed=7, workers=1, progress=False)
    digest = hashlib.sha256()
    for name, data in _files(out).items():
        digest.update(name.encode() + b"\0" + data)
    assert digest.hexdigest() == expected


def test_ensure_synthetic_generates_once_and_again_when_parameters_change(tmp_path):
    out = tmp_path / "cache"
    assert ensure_synthetic(out, n=12, size=32, progress=False) == out.resolve()
    marker = out / COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns
    images = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    assert len(images) == 12
    ensure_synthetic(out, n=12, size=32, progress=False)
    assert marker.stat().st_mtime_ns == stamp and {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == images
    ensure_synthetic(out, n=8, size=32, seed=1, progress=False)
    assert json.loads(marker.read_text())["n"] == 8 and json.loads(marker.read_text())["seed"] == 1
    assert len(list(out.rglob("*.jpg"))) == 8  # the earlier set is cleared, not mixed in
    assert len(read_isic2019(out)) == 8


def test_ensure_synthetic_regenerates_an_interrupted_generation(tmp_path):
    generate(tmp_path, n=6, size=32, workers=1, progress=False)
    (tmp_path / COMPLETE_MARKER).unlink()
    (tmp_path / ".generating").write_text("{}")  # as a killed run leaves it
    next(tmp_path.rglob("*.jpg")).unlink()
    ensure_synthetic(tmp_path, n=6, size=32, progress=False)
    assert (tmp_path / COMPLETE_MARKER).exists() and len(list(tmp_path.rglob("*.jpg"))) == 6


def test_a_file_a_killed_generation_was_still_writing_is_cleared_with_the_set(tmp_path):
    generate(tmp_path, n=6, size=32, workers=1, progress=False)
    leftover = tmp_path / ".ISIC_2019_Training_GroundTruth.csv.4242.partial"  # data.atomic.replaced's name
    leftover.write_text("image,MEL")
    ensure_synthetic(tmp_path, n=6, size=32, seed=3, progress=False)  # other parameters: the set is redrawn
    assert not leftover.exists() and json.loads((tmp_path / COMPLETE_MARKER).read_text())["seed"] == 3


def test_refuses_to_clear_a_folder_it_did_not_write(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate(tmp_path, n=4, size=32, workers=1, progress=False)
    assert precious.read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "isic2020"}, "layout"),
        ({"n": 0}, "number of images"),
        ({"size": 8}, "size"),
        ({"size": (64, 48, 3)}, "size"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"class_frequencies": {"MEL": 1, "XYZ": 1}}, "unknown class"),
        ({"class_frequencies": {"MEL": -1.0}}, ">= 0"),
        ({"class_frequencies": {"BCC": 1.0}, "layout": "isic2017"}, "no positive frequency"),
    ],
)
def test_bad_parameters_raise_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        generate(tmp_path, **{"n": 4, "size": 32, "progress": False, **kwargs})


def test_cli_writes_a_dataset(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "melanoma_lit.data.synthetic", "--out", str(tmp_path / "d"), "--n", "10"]
    command += ["--size", "40x32", "--layout", "folder", "--seed", "3", "--workers", "2", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((tmp_path / "d").resolve())
    images = list((tmp_path / "d").rglob("*.jpg"))
    assert len(images) == 10 and Image.open(images[0]).size == (40, 32)
    bad = subprocess.run([*command[:5], "--size", "big"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr


def _features(path: str) -> np.ndarray:
    """Colour and darkness statistics of the centre relative to the surrounding skin."""
    rgb = np.asarray(Image.open(path), dtype=np.float32) / 255
    h, w, _ = rgb.shape
    border = np.concatenate([rgb[:6].reshape(-1, 3), rgb[-6:].reshape(-1, 3), rgb[:, :6].reshape(-1, 3)])
    skin = np.median(border[border.sum(axis=1) > 0.3], axis=0)
    yy, xx = np.mgrid[0:h, 0:w]
    centre = rgb[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.4 * min(h, w)) ** 2] / np.maximum(skin, 0.05)
    intensity = centre.mean(axis=1)
    chroma = centre / np.maximum(centre.sum(axis=1, keepdims=True), 1e-3)
    hist, _, _ = np.histogram2d(chroma[:, 0], chroma[:, 1], bins=6, range=[[0.2, 0.6], [0.15, 0.45]], density=True)
    levels = np.histogram(intensity, bins=8, range=(0, 1.4), density=True)[0]
    return np.concatenate([hist.ravel(), levels, centre.mean(axis=0), centre.std(axis=0), skin])


def test_classes_differ_visibly_at_low_resolution(tmp_path):
    """Hand-made colour features and a linear model separate the classes on unseen lesions."""
    table = read_isic2019(generate(tmp_path, n=400, size=64, seed=11, progress=False))
    x = np.stack([_features(p) for p in table["path"]])
    y = targets(table, ISIC_CLASSES)
    train, test = next(GroupShuffleSplit(1, test_size=0.3, random_state=0).split(x, groups=table["lesion_id"]))
    assert not set(table["lesion_id"].iloc[train]) & set(table["lesion_id"].iloc[test])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=3000))
    model.fit(x[train], y[train].argmax(axis=1))
    scores = model.predict_proba(x[test])
    auroc = roc_auc_score(y[test], scores, average=None)
    assert auroc.mean() >= 0.85, dict(zip(ISIC_CLASSES, auroc.round(3), strict=True))
