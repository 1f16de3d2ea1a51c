"""Jobs' prediction tables joined with the true labels: out-of-fold sets and mean-probability ensembles.

A prediction CSV (melanoma_lit.inference.predictions.write_predictions) has ``image``, one probability column per
class and extras such as ``fold``. Labels come from its own ``target_<class>``/``known_<class>`` columns when it
has them, else from the job's data, re-read with the job's saved ``config.yaml`` from the folder it ran in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from melanoma_lit.analysis.jobs import Job
from melanoma_lit.data.build import DataSpec, load_pool, load_test
from melanoma_lit.data.table import known_column
from melanoma_lit.errors import DataError
from melanoma_lit.metrics.isic import compute_metrics
from melanoma_lit.runs.files import VAL_PREDICTIONS

TEST_PREDICTIONS = "test_predictions.csv"


def target_column(cls: str) -> str:
    return f"target_{cls}"


@dataclass
class Predictions:
    """``frame``: ``image``, one probability column per class, ``target_<class>``, ``known_<class>`` (+ ``fold``)."""

    frame: pd.DataFrame
    classes: list[str]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, targets and known mask, each ``[N, K]``."""
        frame = self.frame
        return (
            frame[self.classes].to_numpy(dtype=np.float64),
            frame[[target_column(c) for c in self.classes]].to_numpy(dtype=np.float64),
            frame[[known_column(c) for c in self.classes]].to_numpy(dtype=np.float64),
        )

    def metrics(self) -> dict[str, float]:
        return compute_metrics(*self.arrays(), self.classes)

    def __len__(self) -> int:
        return len(self.frame)


class LabelSource:
    """True labels for the images a job predicted; the data of each distinct config is read once."""

    def __init__(self) -> None:
        self._tables: dict[str, pd.DataFrame] = {}

    def attach(self, frame: pd.DataFrame, job: Job, split: str, classes: Sequence[str]) -> pd.DataFrame:
        """``frame`` with ``target_<class>``/``known_<class>`` columns; ``split`` is ``val`` or ``test``."""
        truth_columns = [target_column(c) for c in classes] + [known_column(c) for c in classes]
        if set(truth_columns) <= set(frame.columns):
            return frame
        table = self._table(job, split)
        truth = table.set_index("image_id")
        missing = frame["image"][~frame["image"].isin(truth.index)]
        if len(missing):
            raise DataError(
                f"{job.dir}: {len(missing)} predicted images have no label in the job's {split} data "
                f"(first: {', '.join(missing.astype(str)[:5])}); the data changed since the job ran."
            )
        rows = truth.loc[frame["image"]]
        labels = {target_column(c): rows[c].to_numpy() for c in classes}
        labels.update({known_column(c): rows[known_column(c)].to_numpy() for c in classes})
        return frame.assign(**labels)

    def _table(self, job: Job, split: str) -> pd.DataFrame:
        data = OmegaConf.to_container(job_config(job).data, resolve=True)
        data.pop("fold", None)
        key = json.dumps([data, str(job.cwd), split], sort_keys=True, default=str)
        if key not in self._tables:
            spec = DataSpec.from_config(data)
            with _working_dir(job.cwd):  # the job's relative paths (cache, data) are relative to where it ran
                self._tables[key] = load_pool(spec)[0] if split == "val" else load_test(spec)
        return self._tables[key]


def job_config(job: Job):
    """The resolved config the job trained with (written by training.train)."""
    if job.dir is None or not (job.dir / "config.yaml").exists():
        raise DataError(f"job {job.num} has no config.yaml in {job.dir}: it did not get as far as training.")
    return OmegaConf.load(job.dir / "config.yaml")


def job_classes(job: Job) -> list[str]:
    return list(job_config(job).data.classes)


def read_predictions(job: Job, name: str, labels: LabelSource) -> Predictions:
    """One job's prediction CSV (``VAL_PREDICTIONS`` or ``TEST_PREDICTIONS``) with its labels."""
    path = job.dir / name
    if not path.exists():
        raise DataError(f"{path} not found: job {job.num} wrote no {name}.")
    classes = job_classes(job)
    frame = pd.read_csv(path, dtype={"image": str})
    absent = [c for c in ["image", *classes] if c not in frame]
    if absent:
        raise DataError(f"{path}: missing column(s) {absent}; expected image and one probability column per class.")
    split = "val" if name == VAL_PREDICTIONS else "test"
    return Predictions(labels.attach(frame, job, split, classes), classes)


def out_of_fold(jobs: Sequence[Job], labels: LabelSource) -> Predictions:
    """The jobs' validation predictions stacked: one row per image, each image from the fold that held it out."""
    parts = [read_predictions(job, VAL_PREDICTIONS, labels) for job in jobs]
    _same_classes(parts)
    frame = pd.concat([part.frame for part in parts], ignore_index=True)
    repeated = frame["image"][frame["image"].duplicated()]
    if len(repeated):
        raise DataError(
            f"{len(repeated)} images are validated by more than one of jobs {[job.num for job in jobs]} "
            f"(first: {', '.join(repeated.astype(str)[:5])}): these jobs do not share one fold split, so their "
            "out-of-fold predictions cannot be stacked."
        )
    return Predictions(frame, parts[0].classes)


def mean_ensemble(parts: Sequence[Predictions]) -> Predictions:
    """Mean probability per image over ``parts``, on the images every part predicted (labels from the first)."""
    _same_classes(parts)
    classes = parts[0].classes
    shared = set.intersection(*(set(part.frame["image"]) for part in parts))
    first = parts[0].frame
    frame = first[first["image"].isin(shared)].drop(columns=classes).reset_index(drop=True)
    stacked = [part.frame.set_index("image").loc[frame["image"], classes].to_numpy() for part in parts]
    frame[classes] = np.mean(stacked, axis=0)
    return Predictions(frame[["image", *classes, *[c for c in frame.columns if c not in ("image", *classes)]]], classes)


def _same_classes(parts: Sequence[Predictions]) -> None:
    if not parts:
        raise DataError("no predictions to combine.")
    if any(part.classes != parts[0].classes for part in parts):
        raise DataError(f"jobs predict different class lists {sorted({tuple(p.classes) for p in parts})}.")


@contextmanager
def _working_dir(path: Path | None) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path or previous)
    try:
        yield
    finally:
        os.chdir(previous)
