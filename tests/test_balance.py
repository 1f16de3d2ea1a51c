"""Class-balance weights on small tables whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melanoma_lit.data.balance import MAX_POSITIVE_WEIGHT, positive_weights, sample_weights
from melanoma_lit.data.table import known_column, normalise_table
from melanoma_lit.errors import ConfigError

CLASSES = ("A", "B", "C")


def table(rows: list[dict[str, float | None]]) -> pd.DataFrame:
    """One dict per row: {class: 1/0 known value, None unknown}; classes left out are unknown."""
    records = []
    for i, row in enumerate(rows):
        record = {"image_id": f"img{i}"}
        for cls in CLASSES:
            value = row.get(cls)
            record[cls], record[known_column(cls)] = (0.0, 0.0) if value is None else (float(value), 1.0)
        records.append(record)
    return normalise_table(pd.DataFrame(records), CLASSES)


def test_positive_weights_count_only_known_entries() -> None:
    rows = [
        {"A": 1, "B": 0, "C": 0},
        {"A": 0, "B": 1, "C": 0},
        {"A": 0, "B": 0, "C": 0},
        {"A": 0, "B": None, "C": None},  # knows only "not A"
        {"A": 1},
    ]
    # A: 2 positives, 3 negatives; B: 1 positive, 2 known negatives; C: no positive -> 1
    assert np.allclose(positive_weights(table(rows), CLASSES), [1.5, 2.0, 1.0])


def test_positive_weights_are_clipped() -> None:
    rows = [{"A": 1, "B": 1, "C": 0}] + [{"A": 0, "B": 1, "C": 0}] * 99 + [{"A": 0, "B": 0, "C": 1}]
    weights = positive_weights(table(rows), CLASSES)
    # A and C: 100 negatives per positive, clipped to 50; B: 1 per 100, clipped to 1/50
    assert np.allclose(weights, [MAX_POSITIVE_WEIGHT, 1 / MAX_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT])
    assert np.allclose(positive_weights(table(rows), CLASSES, max_weight=10), [10, 0.1, 10])
    assert weights.dtype == np.float32
    with pytest.raises(ConfigError, match="max_weight"):
        positive_weights(table(rows), CLASSES, max_weight=0.5)


def test_sample_weights_balance_primary_labels() -> None:
    rows = [{"A": 1, "B": 0}] * 3 + [{"B": 1}] + [{"A": 0}] * 2
    weights = sample_weights(table(rows), CLASSES)
    # labels A,A,A,B,?,?: inverse frequencies 1/3,1/3,1/3,1,1/2,1/2 (sum 3), scaled to mean 1
    assert np.allclose(weights, [2 / 3, 2 / 3, 2 / 3, 2, 1, 1])
    per_label = [weights[:3].sum(), weights[3], weights[4:].sum()]
    assert np.allclose(per_label, 2.0)
    assert sample_weights(table([]), CLASSES).shape == (0,)
