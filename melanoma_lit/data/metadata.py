"""Patient metadata (``age``, ``sex``, ``site``: table.META_COLUMNS) as the numbers the model's metadata branch reads.

Age: ``(age - mean) / std`` with the training fold's statistics, 0 where missing, plus a missing flag. Sex and
site: one-hot over a fixed vocabulary plus an ``unknown`` level, which takes empty cells, values outside the
vocabulary and every row of a source without the column. The encoder's settings travel in the checkpoint, so
inference encodes exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from melanoma_lit.data.table import META_COLUMNS
from melanoma_lit.errors import ConfigError

SEXES: tuple[str, ...] = ("female", "male")
# Every site the readers produce (data.sources): HAM10000's localisations (ISIC 2018) and the general sites of
# ISIC 2019 and 2020. The years name sites differently; each name is its own level.
SITES: tuple[str, ...] = (
    "abdomen",
    "acral",
    "anterior torso",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "head/neck",
    "lateral torso",
    "lower extremity",
    "neck",
    "oral/genital",
    "palms/soles",
    "posterior torso",
    "scalp",
    "torso",
    "trunk",
    "upper extremity",
)
UNKNOWN = "unknown"
DEFAULT_AGE = (50.0, 20.0)  # mean, std where the training fold has no ages


def check_columns(columns: Sequence[str]) -> list[str]:
    """``model.metadata`` as a list, or a ConfigError naming the allowed columns (before any data is read)."""
    names = [columns] if isinstance(columns, str) else list(columns)
    if any(name not in META_COLUMNS for name in names) or len(set(names)) != len(names):
        raise ConfigError(
            f"model.metadata={names}: name each of {', '.join(META_COLUMNS)} at most once, as a list "
            "(e.g. model.metadata=[age,sex,site]), or [] for the image-only model."
        )
    return names


@dataclass(frozen=True)
class MetadataEncoder:
    """``columns`` (a subset of META_COLUMNS, in that order) -> float32 features, ``width`` per row."""

    columns: tuple[str, ...]
    age_mean: float = DEFAULT_AGE[0]
    age_std: float = DEFAULT_AGE[1]
    sexes: tuple[str, ...] = SEXES
    sites: tuple[str, ...] = SITES
    levels: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = check_columns(self.columns)
        object.__setattr__(self, "columns", tuple(c for c in META_COLUMNS if c in names))
        object.__setattr__(self, "sexes", tuple(self.sexes))
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "levels", {"sex": (*self.sexes, UNKNOWN), "site": (*self.sites, UNKNOWN)})

    @classmethod
    def fit(cls, columns: Sequence[str], train: pd.DataFrame) -> MetadataEncoder:
        """The encoder for ``columns`` with the age statistics of the training fold ``train``."""
        ages = pd.to_numeric(train["age"], errors="coerce").dropna() if "age" in train else pd.Series(dtype=float)
        mean, std = (float(ages.mean()), float(ages.std(ddof=0))) if len(ages) else DEFAULT_AGE
        return cls(tuple(columns), age_mean=mean, age_std=std if std > 0 else DEFAULT_AGE[1])

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> MetadataEncoder:
        """From ``settings()`` as a checkpoint's hyper_parameters store it."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()})

    def settings(self) -> dict[str, Any]:
        """Plain values for the checkpoint's hyper_parameters."""
        values = asdict(self)
        values.pop("levels")
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    @property
    def width(self) -> int:
        return sum(2 if column == "age" else len(self.levels[column]) for column in self.columns)

    def feature_names(self) -> list[str]:
        """One name per feature, in order (``age``, ``age_missing``, ``sex=female`` ...)."""
        names: list[str] = []
        for column in self.columns:
            names += ["age", "age_missing"] if column == "age" else [f"{column}={v}" for v in self.levels[column]]
        return names

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """``[len(frame), width]`` float32; a column ``frame`` lacks is unknown for every row."""
        parts = []
        for column in self.columns:
            values = frame[column] if column in frame else pd.Series(np.nan, index=frame.index, dtype=object)
            if column == "age":
                age = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
                missing = ~np.isfinite(age)
                scaled = np.where(missing, 0.0, (np.nan_to_num(age) - self.age_mean) / self.age_std)
                parts.append(np.stack([scaled, missing.astype(np.float64)], axis=1))
            else:
                levels = self.levels[column]
                cleaned = values.fillna("").astype(str).str.strip().str.lower()
                index = cleaned.map({level: i for i, level in enumerate(levels)}).fillna(len(levels) - 1)
                parts.append(np.eye(len(levels))[index.to_numpy(dtype=int)])
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)
