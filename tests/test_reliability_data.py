"""Bad data and bad settings: each gets one paragraph naming the file, line or id and the fix.

Covered elsewhere, not repeated here: undecodable, empty, truncated and odd-mode images (test_images), a folder
dataset's unknown or empty class folder (test_sources), too many folds for the lesion groups and classes scarcer
than the folds (test_folds), an unknown backbone config group or key typo (test_config), the library's
close-name hint for a timm name (test_models).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from melanoma_lit.cli import friendly_errors
from melanoma_lit.data.build import DataSpec, build_splits
from melanoma_lit.data.merge import merge_sources
from melanoma_lit.data.sources import read_isic2017, read_isic2018, read_isic2019
from melanoma_lit.data.synthetic import ensure_synthetic
from melanoma_lit.data.table import normalise_table
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.models.backbone import preprocessing_for
from melanoma_lit.train import build_datamodule
from tests.conftest import SMALL_SYNTHETIC, run_command
from tests.fake_isic import write_csv, write_isic2017, write_isic2018, write_isic2019

LABELS = {"ISIC_0000001": "MEL", "ISIC_0000002": "NV", "ISIC_0000003": "BCC"}


def _rewrite(path: Path, edit) -> None:
    frame = pd.read_csv(path, dtype=str)
    edit(frame)
    frame.to_csv(path, index=False)


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path: Path) -> None:
    truth = write_isic2019(tmp_path, LABELS, sep=";")
    with pytest.raises(DataError, match=rf"{truth.name}.*semicolon-separated.*comma-separated"):
        read_isic2019(tmp_path)


def test_a_renamed_column_lists_what_was_found(tmp_path: Path) -> None:
    truth = write_isic2019(tmp_path, LABELS)
    _rewrite(truth, lambda frame: frame.rename(columns={"image": "image_name"}, inplace=True))
    with pytest.raises(DataError, match=r"missing column\(s\) \['image'\]; found \['image_name', 'MEL'"):
        read_isic2019(tmp_path)


@pytest.mark.parametrize("cell", ["yes", "", "0.5", "nan", "-1"])
def test_a_label_that_is_not_0_or_1_names_file_line_image_and_column(tmp_path: Path, cell: str) -> None:
    truth = write_isic2019(tmp_path, LABELS)
    _rewrite(truth, lambda frame: frame.__setitem__("BCC", ["0.0", "0.0", cell]))
    with pytest.raises(
        DataError, match=rf"{truth.name}: 1 rows .*not 0 or 1 \(first: line 4, image ISIC_0000003, BCC="
    ):
        read_isic2019(tmp_path)


@pytest.mark.parametrize(("column", "what"), [("BCC", "no class"), ("NV", "several classes")])
def test_single_label_sources_need_exactly_one_positive(tmp_path: Path, column: str, what: str) -> None:
    truth = write_isic2019(tmp_path / "2019", LABELS)
    flipped = {"BCC": ["0.0", "0.0", "0.0"], "NV": ["0.0", "1.0", "1.0"]}[column]
    _rewrite(truth, lambda frame: frame.__setitem__(column, flipped))
    with pytest.raises(DataError, match=rf"1 rows are not one-hot \(first: ISIC_0000003; line 4 marks {what}\)"):
        read_isic2019(tmp_path / "2019")
    truth = write_isic2018(tmp_path / "2018", {"ISIC_0000001": "MEL", "ISIC_0000002": "AKIEC"})
    _rewrite(truth, lambda frame: frame.__setitem__("NV", ["1.0", "0.0"]))
    with pytest.raises(DataError, match=r"ISIC_0000001; line 2 marks several classes"):
        read_isic2018(tmp_path / "2018")


def test_isic2017_melanoma_and_keratosis_at_once_is_an_error_neither_is_a_nevus(tmp_path: Path) -> None:
    truth = write_isic2017(tmp_path, {"ISIC_0000001": "MEL", "ISIC_0000002": "NV"})
    assert read_isic2017(tmp_path, splits=("train",))["NV"].tolist() == [0.0, 1.0]
    _rewrite(truth, lambda frame: frame.__setitem__("seborrheic_keratosis", ["1.0", "0.0"]))
    with pytest.raises(DataError, match=r"ISIC_0000001; line 2 marks several classes"):
        read_isic2017(tmp_path, splits=("train",))


@pytest.mark.parametrize(("second", "conflict"), [("NV", " with different values"), ("MEL", "")])
def test_duplicate_image_rows_name_their_lines(tmp_path: Path, second: str, conflict: str) -> None:
    truth = write_isic2019(tmp_path, LABELS)
    duplicate = "\n" + ",".join(["ISIC_0000001", *("1.0" if c == second else "0.0" for c in [*ISIC_CLASSES, "UNK"])])
    truth.write_text(truth.read_text().rstrip("\n") + duplicate + "\n")
    with pytest.raises(DataError, match=rf"first: ISIC_0000001 on lines 2, 5{conflict}\)\. Keep one row per image"):
        read_isic2019(tmp_path)


def test_a_row_without_an_image_id_and_duplicate_metadata_rows(tmp_path: Path) -> None:
    truth = write_isic2019(tmp_path, LABELS)
    _rewrite(truth, lambda frame: frame.__setitem__("image", ["ISIC_0000001", "", "ISIC_0000003"]))
    with pytest.raises(DataError, match=r"1 rows have no image \(line\(s\) 3\)"):
        read_isic2019(tmp_path)
    write_isic2019(tmp_path, LABELS)
    meta = write_csv(tmp_path / "ISIC_2019_Training_Metadata.csv", ["image", "lesion_id"], [["ISIC_0000001", "L1"]] * 2)
    with pytest.raises(DataError, match=rf"{meta.name}: 1 image ids appear on more than one row"):
        read_isic2019(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe\x80 binary \x81\x82", b'image,MEL\n"unclosed,1\n'])
def test_empty_binary_or_broken_csv_files_are_data_errors(tmp_path: Path, content: bytes) -> None:
    write_isic2019(tmp_path, LABELS).write_bytes(content)
    with pytest.raises(DataError, match=r"ISIC_2019_Training_GroundTruth\.csv"):
        read_isic2019(tmp_path)


def test_a_row_longer_than_the_header_is_named_not_read_as_an_index(tmp_path: Path) -> None:
    """pandas would silently take the first column as the index (first row) or drop cells (index_col=False)."""
    truth = write_isic2019(tmp_path, LABELS)
    lines = truth.read_text().splitlines()
    for row, message in ((1, r"line 2 has more cells than the header"), (2, r"Expected 10 fields in line 3, saw 11")):
        edited = [*lines[:row], lines[row] + ",1.0", *lines[row + 1 :]]
        truth.write_text("\n".join(edited) + "\n")
        with pytest.raises(DataError, match=rf"{truth.name}: .*{message}"):
            read_isic2019(tmp_path)


def test_images_without_a_csv_row_are_reported_and_left_out(tmp_path: Path, caplog) -> None:
    write_isic2019(tmp_path, LABELS, images=[*LABELS, "ISIC_0000009", "ISIC_0000008", "ISIC_0000007_superpixels"])
    with caplog.at_level(logging.WARNING):
        table = read_isic2019(tmp_path)
    assert sorted(table["image_id"]) == sorted(LABELS)
    assert (
        "2 images have no row in the ground truth and are not used (first: ISIC_0000008, ISIC_0000009)" in caplog.text
    )


def test_tables_handed_to_the_merge_hold_0_or_1_and_name_their_images(tmp_path: Path) -> None:
    frame = pd.DataFrame({"image_id": ["a", "b"], "A": [1.0, "x"], "known_A": [1.0, 1.0]})
    with pytest.raises(DataError, match=r"column A: value 'x' for image 'b' is not 0 or 1"):
        normalise_table(frame, ["A"])
    with pytest.raises(DataError, match=r"no value for image 'b' although known_A says it is known"):
        normalise_table(frame.assign(A=[1.0, None]), ["A"])
    assert normalise_table(frame.assign(A=[1.0, None], known_A=[1.0, 0.0]), ["A"])["A"].tolist() == [1.0, 0.0]
    table = frame.assign(A=[1.0, 0.0], split="train", source="mine", path="")
    with pytest.raises(DataError, match=r"table 0 \(mine\): 2 rows have no image_id"):
        merge_sources([table.drop(columns="image_id")], classes=["A"], allow_missing=True)
    with pytest.raises(DataError, match=r"table 0 \(mine\): split values \[''\]"):
        merge_sources([table.drop(columns="split")], classes=["A"], allow_missing=True)


@pytest.fixture
def synthetic_copy(compose_train, tmp_path: Path) -> Path:
    """A private copy of the session's small synthetic set (ISIC 2019 layout), free to damage."""
    data = compose_train(*SMALL_SYNTHETIC).data
    source = ensure_synthetic(data.sources[0].root, n=data.synthetic.n, size=data.synthetic.size, seed=0)
    return Path(shutil.copytree(source, tmp_path / "isic2019"))


def _spec(compose_train, root: Path, *overrides: str) -> DataSpec:
    cfg = compose_train("data=isic2019", f"data.root={root}", *overrides)
    return DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True))


def test_ids_without_an_image_file_fail_or_are_dropped_and_counted(compose_train, synthetic_copy: Path) -> None:
    (synthetic_copy / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").unlink()
    folder = synthetic_copy / "ISIC_2019_Training_Input"
    expected = f"1 of 96 images have no file on disk: isic2019: 1 (first: ISIC_0000005), looked in {folder}."
    with pytest.raises(DataError, match=re.escape(expected) + ".*allow_missing"):
        build_splits(_spec(compose_train, synthetic_copy))
    splits = build_splits(_spec(compose_train, synthetic_copy, "data.allow_missing=true"))
    assert splits.summary["missing_images_dropped"] == 1 and splits.summary["pool"] == 95
    assert splits.summary["missing_images_per_source"] == {"isic2019": 1}


@pytest.mark.parametrize("fold", ["5", "-1", "first"])
def test_a_fold_outside_num_folds_fails_before_reading_data(compose_train, tmp_path: Path, fold: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.fold=.* with data\.num_folds=5: folds are numbered 0\.\.4"):
        _spec(compose_train, tmp_path / "nowhere", f"data.fold={fold}")


def test_num_folds_beyond_a_class_warns_with_the_fix_and_beyond_all_groups_fails(
    compose_train, synthetic_copy: Path, tmp_path: Path, caplog
) -> None:
    own_cache = f"paths.cache_dir={tmp_path / 'cache'}"  # folds are written (and checked) once per cache
    with caplog.at_level(logging.WARNING):
        build_splits(_spec(compose_train, synthetic_copy, own_cache))
    assert "fewer groups than the 5 folds" in caplog.text
    assert "Lower data.num_folds to 3 to have every class" in caplog.text
    with pytest.raises(ConfigError, match=r"data\.num_folds=97 but the table has only \d+ lesion/patient groups"):
        build_splits(_spec(compose_train, synthetic_copy, own_cache, "data.num_folds=97"))


def test_input_size_too_small_for_the_backbone_names_the_minimum(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"input_size=16 is too small for 'inception_v3'.*at least 75x75"):
        build_datamodule(compose_train("backbone=inception_v3", "data.input_size=16"))
    assert preprocessing_for("inception_v3", 75).input_size == (75, 75)
    with pytest.raises(ConfigError, match=r"'vit_base_patch16_224' takes only 224x224"):
        preprocessing_for("vit_base_patch16_224", 112)


def test_an_unknown_backbone_name_suggests_close_ones(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"unknown timm backbone 'densenet_201'\. Did you mean: densenet201"):
        build_datamodule(compose_train("backbone.name=densenet_201"))


def _train_command(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``python -m melanoma_lit.train`` as a user runs it, without HYDRA_FULL_ERROR."""
    return run_command("train", *overrides, cwd=cwd, HYDRA_FULL_ERROR="0")


def test_a_missing_data_root_is_a_short_error_and_exit_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _train_command(tmp_path, "data=isic2017", "data.root=/nonexistent", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert "Error: /nonexistent: folder not found. Point the source's root (data.root)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and len(result.stderr.strip().splitlines()) <= 3
    # once on the console (not logged there as well), and in the run folder's log
    assert (result.stdout + result.stderr).count("/nonexistent: folder not found") == 1
    assert "[ERROR] - /nonexistent: folder not found. Point" in (run_dir / "train.log").read_text()


def test_full_error_keeps_the_traceback(monkeypatch) -> None:
    def failing() -> None:
        raise DataError("broken.jpg: cannot decode")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        friendly_errors(failing)()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as exit_info:
        friendly_errors(failing)()
    assert exit_info.value.code == 2


def test_a_corrupt_image_in_a_worker_names_its_path(compose_train, synthetic_copy: Path, tmp_path: Path) -> None:
    """Through the command, as a user sees it (in-process, the loader iterators a failed fit leaves in reference
    cycles stall a later garbage collection for seconds while their worker processes time out)."""
    # a validation image: every one is read (training drops its last partial batch, whose images vary)
    broken = Path(build_splits(_spec(compose_train, synthetic_copy)).val["path"].iloc[0])
    broken.write_bytes(broken.read_bytes()[:300])
    result = _train_command(
        tmp_path,
        "data=isic2019",
        f"data.root={synthetic_copy}",
        "backbone.pretrained=false",
        "data.num_workers=2",
        "data.batch_size=16",
        "backbone.name=test_resnet",
        "data.input_size=32",
        "model.channels_last=false",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "trainer.accelerator=cpu",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"Error: {broken}: cannot decode image (" in result.stderr
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
