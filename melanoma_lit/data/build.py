"""From a data config to train/val/test tables: read, merge, guard against leakage, split by fold."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from melanoma_lit.data.folds import load_or_create_folds, split_by_fold
from melanoma_lit.data.merge import MergeReport, merge_sources, remove_leakage, with_known_groups
from melanoma_lit.data.sources import find_grouping_files, read_grouping, read_source
from melanoma_lit.data.synthetic import ensure_synthetic
from melanoma_lit.data.table import empty_table
from melanoma_lit.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SourceSpec:
    """One dataset on disk: a reader name (isic2017, isic2018, isic2019, isic2020, folder), its folder,
    the splits to keep (None = all) and reader options (see melanoma_lit.data.sources)."""

    name: str
    root: str
    splits: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyntheticSpec:
    """Parameters of the built-in synthetic set, generated into the first source's root when absent."""

    n: int = 2000
    size: int = 128
    seed: int = 0


@dataclass
class DataSpec:
    """The data config (conf/data/*.yaml) as a typed object."""

    name: str
    sources: list[SourceSpec]
    classes: list[str]
    test: str | None = None
    test_sets: dict[str, SourceSpec] = field(default_factory=dict)
    allow_missing: bool = False
    num_folds: int = 5
    fold: int | str = 0
    fold_seed: int = 0
    cache_dir: str = ".cache/melanoma_lit"
    synthetic: SyntheticSpec | None = None
    lesion_metadata: list[str] = field(default_factory=list)
    challenges: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # checked before any data is read, so a typo in a sweep fails at once
        if self.fold in ("all", "official"):
            return
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.num_folds:
            raise ConfigError(
                f"data.fold={self.fold!r} with data.num_folds={self.num_folds}: folds are numbered "
                f"0..{self.num_folds - 1}. Pick one of them, 'all' (train on everything, no validation) or "
                "'official' (the source's own train/val split), or raise data.num_folds."
            )

    @classmethod
    def from_config(cls, config: Any) -> DataSpec:
        values = dict(config)  # loader and model-facing keys of conf/data are not the spec's business
        sources = [SourceSpec(**dict(source)) for source in values.pop("sources")]
        test_sets = {key: SourceSpec(**dict(spec)) for key, spec in dict(values.pop("test_sets", {}) or {}).items()}
        synthetic = values.pop("synthetic", None)
        known = {f for f in cls.__dataclass_fields__ if f not in ("sources", "test_sets", "synthetic")}
        return cls(
            sources=sources,
            test_sets=test_sets,
            synthetic=SyntheticSpec(**dict(synthetic)) if synthetic else None,
            **{key: values[key] for key in known if key in values},
        )


@dataclass
class DataSplits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    summary: dict[str, Any]


def _read(spec: SourceSpec) -> pd.DataFrame:
    table = read_source(spec.name, spec.root, **spec.options)
    if spec.splits is None:
        return table
    unknown = sorted(set(spec.splits) - {"train", "val", "test"})
    if unknown:
        raise ConfigError(f"data source {spec.name}: splits {unknown} unknown; use train, val and/or test.")
    return table[table["split"].isin(spec.splits)].reset_index(drop=True)


def prepare_sources(spec: DataSpec) -> None:
    """Generate the synthetic set if configured and absent; real sources need nothing."""
    if spec.synthetic is not None:
        ensure_synthetic(spec.sources[0].root, n=spec.synthetic.n, size=spec.synthetic.size, seed=spec.synthetic.seed)


def load_pool(spec: DataSpec) -> tuple[pd.DataFrame, MergeReport]:
    """Every labelled image of the configured sources, merged into one row per image."""
    prepare_sources(spec)
    tables = [_read(source) for source in spec.sources]
    return merge_sources(tables, classes=spec.classes, allow_missing=spec.allow_missing)


def load_test(spec: DataSpec) -> pd.DataFrame:
    if spec.test is None:
        return empty_table(spec.classes)
    if spec.test not in spec.test_sets:
        raise ConfigError(f"data.test={spec.test}: unknown evaluation set; choose one of {sorted(spec.test_sets)}.")
    table, _ = merge_sources([_read(spec.test_sets[spec.test])], classes=spec.classes, allow_missing=spec.allow_missing)
    return table


def folds_path(spec: DataSpec, pool: pd.DataFrame) -> Path:
    """One folds file per distinct image set and grouping, so every job of a sweep shares the same folds (and
    lesion ids found later, e.g. by the leakage guard, make new folds rather than reuse ungrouped ones)."""
    rows = pool["image_id"] + " " + pool["lesion_id"] + " " + pool["patient_id"]
    digest = hashlib.sha1("\n".join(sorted(rows)).encode()).hexdigest()[:10]
    return Path(spec.cache_dir) / "folds" / f"{spec.name}-k{spec.num_folds}-seed{spec.fold_seed}-{digest}.csv"


def known_groups(spec: DataSpec, pool: pd.DataFrame) -> pd.DataFrame:
    """Every image's lesion and patient ids that the data knows: the pool's own, then those of
    ``data.lesion_metadata`` and of the official grouping files beside any configured source or test set."""
    roots = [source.root for source in spec.sources]
    if spec.test in spec.test_sets:
        roots.append(spec.test_sets[spec.test].root)
    files = [*map(Path, spec.lesion_metadata), *find_grouping_files(roots)]
    log.info("leakage guard: lesion/patient ids from the sources and %s", [str(path) for path in files] or "no file")
    return pd.concat([pool[["image_id", "lesion_id", "patient_id"]], *map(read_grouping, files)], ignore_index=True)


def official_tests_in(spec: DataSpec, pool: pd.DataFrame) -> dict[str, int]:
    """How many images of each official test set of the configured sources are in ``pool``."""
    if not (pool["split"] == "test").any():  # the merge keeps an official test image's split
        return {}
    configured = {source.name for source in spec.sources}
    counts = {}
    for name, source in spec.test_sets.items():
        if source.name in configured and name != spec.test:
            held_out = _read(source)["image_id"]
            counts[name] = int(pool["image_id"].isin(held_out).sum())
    return {name: count for name, count in counts.items() if count}


def build_splits(spec: DataSpec) -> DataSplits:
    pool, report = load_pool(spec)
    test = load_test(spec)
    n_leaking = 0
    if len(test):
        groups = known_groups(spec, pool)
        pool, test = with_known_groups(pool, groups), with_known_groups(test, groups)
        pool, n_leaking = remove_leakage(pool, test)
        log.info("removed %d training/validation images sharing an image or lesion with %s", n_leaking, spec.test)
    tests_in_pool = official_tests_in(spec, pool)
    if tests_in_pool:
        _warn_once(
            f"the training pool holds official test images ({', '.join(f'{k}: {v}' for k, v in tests_in_pool.items())})"
            ": right for a final model, but scores on those test sets would be inflated. Hold them out with "
            f"data.test={next(iter(tests_in_pool))} before scoring on it."
        )
    if spec.fold == "official":
        train, val = pool[pool["split"] == "train"], pool[pool["split"] == "val"]
        fold_file = None
    else:
        fold_file = folds_path(spec, pool)
        folds = load_or_create_folds(pool, fold_file, spec.num_folds, spec.fold_seed, spec.classes)
        train, val = split_by_fold(pool, folds, spec.fold)
    summary = {
        "pool": len(pool),
        "train": len(train),
        "val": len(val),
        "test": len(test),
        "removed_for_leakage": n_leaking,
        "official_test_in_pool": tests_in_pool,
        "missing_images_dropped": report.n_missing_images,
        "missing_images_per_source": report.missing_per_source,
        "folds_file": str(fold_file) if fold_file else None,
    }
    return DataSplits(train.reset_index(drop=True), val.reset_index(drop=True), test, summary)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Once per process: cross-validation builds the splits of every fold in one job."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
