"""Property-based tests of the CSV readers and the merge: any well-formed table round-trips, anything else raises
the project's own error (MelanomaLitError), never an unhandled exception.

Each reader gets its official ground-truth file written in every way the format allows (0/1 spelled 1, 1.0 or
" 1.00 ", extra columns, any row order), then damaged: a column dropped or renamed, a label that is not 0 or 1, a
repeated or empty id, two diagnoses or none, or arbitrary edits to the file's text.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melanoma_lit.data.merge import merge_sources
from melanoma_lit.data.sources import read_isic2017, read_isic2018, read_isic2019
from melanoma_lit.data.table import known_column, primary_label
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import DataError, MelanomaLitError
from tests.fake_isic import ISIC2017_COLUMNS, ISIC2018_COLUMNS, write_images

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Layout:
    """One official ground-truth format: where the file and images go, its columns, and what a label becomes."""

    reader: Callable[[Path], pd.DataFrame]
    truth: str
    images: str
    id_column: str
    columns: tuple[str, ...]
    labels: tuple[str, ...]  # what a row can say; each is one 1 among ``columns`` (or none: 2017's "neither")
    primary: dict[str, str]  # the table's primary label for each; "?" where the row leaves its class unknown
    optional: tuple[str, ...] = ()  # columns the reader accepts the file without (2019's all-zero UNK)

    def ones(self, label: str) -> set[str]:
        return {label} & set(self.columns)


ISIC2019 = Layout(
    read_isic2019,
    "ISIC_2019_Training_GroundTruth.csv",
    "ISIC_2019_Training_Input",
    "image",
    (*ISIC_CLASSES, "UNK"),
    (*ISIC_CLASSES, "UNK"),
    {**{cls: cls for cls in ISIC_CLASSES}, "UNK": "?"},
    optional=("UNK",),
)
ISIC2018 = Layout(
    read_isic2018,
    "ISIC2018_Task3_Training_GroundTruth.csv",
    "ISIC2018_Task3_Training_Input",
    "image",
    ISIC2018_COLUMNS,
    ISIC2018_COLUMNS,
    {**{cls: cls for cls in ISIC2018_COLUMNS}, "AKIEC": "?"},
)
ISIC2017 = Layout(
    lambda root: read_isic2017(root, splits=("train",)),
    "ISIC-2017_Training_Part3_GroundTruth.csv",
    "ISIC-2017_Training_Data",
    "image_id",
    ISIC2017_COLUMNS,
    (*ISIC2017_COLUMNS, "neither"),
    {"melanoma": "MEL", "seborrheic_keratosis": "BKL", "neither": "NV"},
)
LAYOUTS = [ISIC2019, ISIC2018, ISIC2017]

ONE, ZERO = st.sampled_from(["1", "1.0", "1.00", " 1.0 ", "1e0"]), st.sampled_from(["0", "0.0", "0.00", " 0 ", "-0"])


@st.composite
def ground_truths(draw, layout: Layout) -> tuple[dict[str, str], str]:
    """Image id -> label, and the CSV text stating them in any spelling the format allows."""
    numbers = draw(st.lists(st.integers(0, 9_999_999), min_size=1, max_size=12, unique=True))
    labels = {f"ISIC_{n:07d}": draw(st.sampled_from(layout.labels)) for n in numbers}
    extra = draw(st.sampled_from([(), ("note",)]))  # columns the reader does not need are ignored
    header = [layout.id_column, *layout.columns, *extra]
    lines = [",".join(header)]
    for image_id, label in labels.items():
        cells = [draw(ONE if column in layout.ones(label) else ZERO) for column in layout.columns]
        lines.append(",".join([image_id, *(f'"{cell}"' if " " in cell else cell for cell in cells), *extra]))
    return labels, "\n".join(lines) + "\n"


@contextmanager
def source_folder(layout: Layout, text: str | bytes, image_ids: list[str]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        truth = root / layout.truth
        truth.write_bytes(text if isinstance(text, bytes) else text.encode())
        write_images(root / layout.images, image_ids)
        yield root


def _layouts(test: Callable) -> Callable:
    return pytest.mark.parametrize("layout", LAYOUTS, ids=["isic2019", "isic2018", "isic2017"])(test)


@_layouts
@FUZZ
@given(data=st.data())
def test_well_formed_ground_truth_round_trips(layout: Layout, data) -> None:
    labels, text = data.draw(ground_truths(layout))
    with source_folder(layout, text, list(labels)) as root:
        table = layout.reader(root)
    assert table["image_id"].tolist() == list(labels)
    expected = [layout.primary[label] for label in labels.values()]
    assert primary_label(table, ISIC_CLASSES).tolist() == expected
    assert [Path(path).stem for path in table["path"]] == list(labels)
    masks = table[[known_column(cls) for cls in ISIC_CLASSES]].to_numpy()
    assert set(np.unique(masks)) <= {0.0, 1.0} and set(np.unique(table[list(ISIC_CLASSES)])) <= {0.0, 1.0}


def _damage(draw, layout: Layout, labels: dict[str, str], text: str) -> str:
    """A ground truth that is wrong in one way the reader must name."""
    header, *rows = [line.split(",") for line in text.splitlines()]
    row = draw(st.integers(0, len(rows) - 1))
    column = draw(st.integers(1, len(layout.columns)))
    kind = draw(st.sampled_from(["drop", "rename", "cell", "repeat", "blank id", "two", "none", "delimiter"]))
    if kind == "drop":
        column = draw(st.sampled_from([i for i, name in enumerate(layout.columns, 1) if name not in layout.optional]))
        header, rows = header[:column] + header[column + 1 :], [r[:column] + r[column + 1 :] for r in rows]
    elif kind == "rename":
        header[column] = header[column].upper() + "_x"
    elif kind == "cell":
        rows[row][column] = draw(st.sampled_from(["", "yes", "0.5", "2", "-1", "nan", "NaN", "inf", "1,0", "O"]))
        rows[row][column] = f'"{rows[row][column]}"'
    elif kind == "repeat":
        rows.append(list(rows[row]))
    elif kind == "blank id":
        rows[row][0] = ""
    elif kind == "two":
        rows[row][1:3] = ["1", "1"]
    elif kind == "none":
        if layout is ISIC2017:  # "neither" is a diagnosis there: damage the cell instead
            rows[row][column] = "x"
        else:
            rows[row][1 : 1 + len(layout.columns)] = ["0"] * len(layout.columns)
    else:
        return "\n".join(";".join(line) for line in [header, *rows]) + "\n"
    return "\n".join(",".join(line) for line in [header, *rows]) + "\n"


@_layouts
@FUZZ
@given(data=st.data())
def test_malformed_ground_truth_raises_a_data_error_naming_the_file(layout: Layout, data) -> None:
    labels, text = data.draw(ground_truths(layout))
    damaged = _damage(data.draw, layout, labels, text)
    with source_folder(layout, damaged, list(labels)) as root, pytest.raises(DataError, match=re.escape(layout.truth)):
        layout.reader(root)


@st.composite
def edits(draw, text: str) -> bytes:
    """Arbitrary edits to the file's bytes: cut, insert, overwrite, or replace it."""
    data = text.encode()
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "insert", "overwrite", "truncate"]))
        if kind == "cut":
            data = data[:where] + data[where + draw(st.integers(1, 20)) :]
        elif kind == "truncate":
            data = data[:where]
        else:
            junk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b",", b"\n", b'"', b";", b"\x00", b"\r"]))
            data = data[:where] + junk + data[where + (len(junk) if kind == "overwrite" else 0) :]
    return data


@_layouts
@FUZZ
@given(data=st.data())
def test_any_edit_to_the_file_gives_a_valid_table_or_the_projects_error(layout: Layout, data) -> None:
    labels, text = data.draw(ground_truths(layout))
    edited = data.draw(edits(text))
    with source_folder(layout, edited, list(labels)) as root:
        try:
            table = layout.reader(root)
        except MelanomaLitError:
            return
    assert table["image_id"].is_unique and (table["image_id"] != "").all()
    assert set(np.unique(table[list(ISIC_CLASSES)])) <= {0.0, 1.0}


# ------------------------------------------------------------------------------------------- merge

CLASSES = ("A", "B")
SOURCES = ("isic2019", "isic2018", "isic2017")  # in SOURCE_PRECEDENCE order
SPLIT_RANK = {"train": 0, "val": 1, "test": 2}


@st.composite
def source_tables(draw, image: str, most: int = 3) -> list[pd.DataFrame]:
    """1 to ``most`` tables over a small pool of ids, so they overlap; every image has a file, some rows do not
    say so."""
    tables = []
    for position in range(draw(st.integers(1, most))):
        ids = draw(st.lists(st.sampled_from([f"img{i}" for i in range(8)]), min_size=1, max_size=6, unique=True))
        rows = []
        for image_id in ids:
            row = {"image_id": image_id, "path": draw(st.sampled_from([image, ""])), "source": SOURCES[position]}
            row["split"] = draw(st.sampled_from(list(SPLIT_RANK)))
            row["lesion_id"] = draw(st.sampled_from(["", "L1", "L2"]))
            for cls in CLASSES:
                row[known_column(cls)] = draw(st.sampled_from([0.0, 1.0]))
                row[cls] = draw(st.sampled_from([0.0, 1.0])) if row[known_column(cls)] else 0.0
            rows.append(row)
        tables.append(pd.DataFrame(rows))
    ids_with_file = {i for t in tables for i, p in zip(t["image_id"], t["path"], strict=True) if p}
    for table in tables:  # an image the merge cannot find a file for is a separate, tested error
        table.loc[~table["image_id"].isin(ids_with_file), "path"] = image
    return tables


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("merge") / "image.jpg"
    path.write_bytes(b"placeholder")
    return str(path)


@FUZZ
@given(data=st.data())
def test_merge_keeps_every_image_once_with_what_its_best_source_knows(image_file: str, data) -> None:
    tables = data.draw(source_tables(image_file))
    merged, report = merge_sources(tables, classes=CLASSES)
    stacked = pd.concat(tables, ignore_index=True)
    assert merged["image_id"].tolist() == sorted(stacked["image_id"].unique())
    assert report.n_rows == len(merged)
    for _, row in merged.iterrows():
        rows = stacked[stacked["image_id"] == row["image_id"]]
        assert row["split"] == max(rows["split"], key=SPLIT_RANK.get)
        for cls in CLASSES:
            knowing = rows[rows[known_column(cls)] == 1]
            assert row[known_column(cls)] == float(len(knowing) > 0)
            if len(knowing):  # the first table in SOURCES order that knows it (finer sources first)
                best = min(knowing.index, key=lambda i: SOURCES.index(stacked.at[i, "source"]))
                assert row[cls] == stacked.at[best, cls]


@FUZZ
@given(data=st.data())
def test_merging_one_table_gives_it_back(image_file: str, data) -> None:
    (table,) = data.draw(source_tables(image_file, most=1))
    merged, _ = merge_sources([table], classes=CLASSES)
    expected = table.sort_values("image_id").reset_index(drop=True)
    for column in ("image_id", "path", "split", "lesion_id", "source", *CLASSES, *map(known_column, CLASSES)):
        assert merged[column].tolist() == expected[column].tolist(), column


ODD_VALUES = st.one_of(
    st.text(max_size=5), st.floats(allow_nan=True), st.integers(-3, 3), st.none(), st.sampled_from(["1", "0.0", ""])
)


@FUZZ
@given(data=st.data())
def test_any_cell_of_a_merged_table_may_be_wrong_and_the_merge_raises_only_its_own_error(image_file, data) -> None:
    tables = data.draw(source_tables(image_file))
    table = tables[data.draw(st.integers(0, len(tables) - 1))]
    kind = data.draw(st.sampled_from(["cell", "drop column", "extra class", "repeat row"]))
    if kind == "cell":
        column = data.draw(st.sampled_from(list(table.columns)))
        table[column] = table[column].astype(object)
        table.at[data.draw(st.integers(0, len(table) - 1)), column] = data.draw(ODD_VALUES)
    elif kind == "drop column":
        table.drop(columns=data.draw(st.sampled_from(list(table.columns))), inplace=True)
    elif kind == "extra class":
        table["known_C"], table["C"] = 1.0, 1.0
    else:
        table.loc[len(table)] = table.iloc[0]
    try:
        merged, _ = merge_sources(tables, classes=CLASSES)
    except MelanomaLitError:
        return
    assert merged["image_id"].is_unique
    assert set(np.unique(merged[[*CLASSES, *map(known_column, CLASSES)]])) <= {0.0, 1.0}
