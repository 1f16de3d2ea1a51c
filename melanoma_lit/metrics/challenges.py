"""The ISIC challenges' own headline metrics, on their own label sets, computed as ``isic-challenge-scoring`` does.

The project's multi-label metrics (``metrics.isic``) score every class on the rows that know it; a challenge
scores its official columns on every image of its truth file. ``challenge_scores`` maps the model's outputs and
the data's labels onto a challenge's columns (a union such as AKIEC from its parts, a subtype such as
seborrheic keratosis from its parent's probability) and returns ``<challenge>/<metric>`` values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn.metrics

from melanoma_lit.data.table import infer_labels, known_column, normalise_table
from melanoma_lit.data.taxonomy import ISIC_CLASSES, SUBTYPE_CLASSES, UNION_CLASSES, label_space
from melanoma_lit.errors import ConfigError
from melanoma_lit.metrics.arrays import ArrayLike, both_labels, check_inputs, confusion_counts

BALANCED_MULTICLASS_ACCURACY = "balanced_multiclass_accuracy"
MEAN_AUC = "mean_auc"
AUC = "auc"


@dataclass(frozen=True)
class Challenge:
    """One challenge's submission columns (official names, official order), the class each one is, and the
    metric it ranked by; ``unpredicted`` columns (ISIC 2019's UNK) are submitted as 0. ``id_column`` names the
    image column of the official submission layout (the scorer itself reads ``image``)."""

    name: str
    columns: tuple[str, ...]
    classes: tuple[str, ...]
    headline: str
    unpredicted: tuple[str, ...] = ()
    id_column: str = "image"


_TASK3 = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
CHALLENGES: dict[str, Challenge] = {
    "isic2017_part3": Challenge(
        "isic2017_part3", ("melanoma", "seborrheic_keratosis"), ("MEL", "SK"), MEAN_AUC, id_column="image_id"
    ),
    "isic2018_task3": Challenge("isic2018_task3", _TASK3, _TASK3, BALANCED_MULTICLASS_ACCURACY),
    "isic2019_task1": Challenge("isic2019_task1", ISIC_CLASSES, ISIC_CLASSES, BALANCED_MULTICLASS_ACCURACY, ("UNK",)),
    "isic2020": Challenge("isic2020", ("target",), ("MEL",), AUC, id_column="image_name"),
}


def get_challenge(name: str) -> Challenge:
    if name not in CHALLENGES:
        raise ConfigError(f"challenge {name!r} is unknown: choose from {', '.join(CHALLENGES)}.")
    return CHALLENGES[name]


def check_predictable(challenge: Challenge, classes: Sequence[str]) -> None:
    """Fail before training when the model's outputs cannot make up the challenge's columns."""
    missing = missing_classes(challenge.classes, classes)
    if missing:
        raise ConfigError(
            f"data.challenges has {challenge.name}, whose columns need {missing}, but the model predicts "
            f"{list(classes)}: add {missing} to data.classes (a union such as AKIEC may instead come from all of "
            "its parts, a subtype such as SK from its parent), or drop the challenge."
        )


def check_scorable(challenge: Challenge, classes: Sequence[str]) -> None:
    """Fail before training when labels of ``classes`` cannot decide the challenge's truth: a subtype's
    probability may come from its parent's, but "benign keratosis" does not say "seborrheic keratosis"."""
    check_predictable(challenge, classes)
    undecided = [cls for cls in challenge.classes if cls not in classes and cls not in UNION_CLASSES]
    if undecided:
        raise ConfigError(
            f"data.challenges has {challenge.name}, whose truth needs labels of {undecided}, but data.classes is "
            f"{list(classes)}: add {undecided} to data.classes (a subtype is known only where a source labels it), "
            "or drop the challenge."
        )


def missing_classes(wanted: Sequence[str], classes: Sequence[str]) -> list[str]:
    """The classes of ``wanted`` that neither ``classes`` nor the taxonomy's relations among them give."""
    return [cls for cls in wanted if not _derivable(cls, classes)]


def _derivable(cls: str, classes: Sequence[str]) -> bool:
    if cls in classes:
        return True
    if cls in UNION_CLASSES:
        return all(part in classes for part in UNION_CLASSES[cls])
    return cls in SUBTYPE_CLASSES and SUBTYPE_CLASSES[cls] in classes


def class_probabilities(probs: ArrayLike, classes: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Probabilities of ``wanted`` from a model's outputs over ``classes``: a class the model predicts as it is;
    a union as min(1, sum of its parts) (exclusive diagnoses); a subtype as its parent's probability, the most it
    can be. The caller checks ``missing_classes`` first."""
    p = np.asarray(probs)
    column = {cls: p[:, index] for index, cls in enumerate(classes)}

    def probability(cls: str) -> np.ndarray:
        if cls in column:
            return column[cls]
        if cls in UNION_CLASSES:
            # 12 decimals: a sum such as 0.1 + 0.2 = 0.30000000000000004 would read back from the submission
            # file (pandas' parser, as the scorer reads it) one ulp off, and break or make an argmax tie
            return np.minimum(1.0, np.round(np.sum([column[part] for part in UNION_CLASSES[cls]], axis=0), 12))
        return column[SUBTYPE_CLASSES[cls]]

    return np.stack([probability(cls) for cls in wanted], axis=1).reshape(len(p), len(wanted))


def challenge_probabilities(challenge: Challenge, probs: ArrayLike, classes: Sequence[str]) -> np.ndarray:
    """The submission's probability columns (float64, ``challenge.columns`` then ``unpredicted`` as 0), made
    of the model's classes by ``class_probabilities``."""
    check_predictable(challenge, classes)
    p = check_inputs(probs, probs, probs, classes)[0]
    predicted = class_probabilities(p, classes, challenge.classes)
    return np.column_stack([predicted, *(np.zeros(len(p)) for _ in challenge.unpredicted)])


def challenge_truth(
    challenge: Challenge, targets: ArrayLike, known: ArrayLike, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Truth and known mask of the challenge's columns, from the labels of ``classes`` and what the taxonomy
    implies (AKIEC from AK and SCC, ...); ``unpredicted`` columns are "none of the others" where all are known."""
    t, k = (np.asarray(values, dtype=np.float64) for values in (targets, known))
    frame = pd.DataFrame({"image_id": np.arange(len(t)).astype(str)})
    for index, cls in enumerate(classes):
        frame[cls], frame[known_column(cls)] = t[:, index] * (k[:, index] > 0.5), (k[:, index] > 0.5).astype(float)
    space = label_space(classes)
    frame = infer_labels(normalise_table(frame, space))
    truth = frame[list(challenge.classes)].to_numpy(dtype=bool)
    mask = frame[[known_column(cls) for cls in challenge.classes]].to_numpy(dtype=bool)
    if challenge.unpredicted:
        decided = mask.all(axis=1)
        none = decided & ~truth.any(axis=1)
        truth = np.column_stack([truth, *(none for _ in challenge.unpredicted)])
        mask = np.column_stack([mask, *(decided for _ in challenge.unpredicted)])
    return truth, mask


def challenge_scores(
    name: str, probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str]
) -> dict[str, float]:
    """``<name>/<metric>``: the headline metric as the official scorer computes it on the images whose truth the
    challenge's columns decide (``<name>/scored_images``), and each column's AUC for the AUC challenges.

    Balanced multiclass accuracy: argmax over the columns, a tied argmax counting as wrong (the scorer's
    "undecided"), mean recall over the classes present. AUC: sklearn's, as the scorer calls it.
    """
    challenge = get_challenge(name)
    p = challenge_probabilities(challenge, probs, classes)
    t, k = challenge_truth(challenge, targets, known, classes)
    rows = _scored_rows(challenge, t, k)
    if challenge.headline == BALANCED_MULTICLASS_ACCURACY:
        matrix, true_counts = confusion_counts(p[rows], t[rows])
        present = true_counts > 0
        value = float(np.mean(np.diag(matrix)[present] / true_counts[present])) if present.any() else np.nan
        return {f"{name}/{BALANCED_MULTICLASS_ACCURACY}": value, f"{name}/scored_images": float(rows.sum())}
    aucs = {}
    for index, column in enumerate(challenge.columns):
        known_rows = k[:, index]
        truth = t[known_rows, index]
        aucs[column] = (
            float(sklearn.metrics.roc_auc_score(truth, p[known_rows, index])) if both_labels(truth) else np.nan
        )
    scored = float(rows.sum())
    if challenge.headline == AUC:
        return {f"{name}/{AUC}": aucs[challenge.columns[0]], f"{name}/scored_images": scored}
    result = {f"{name}/{column}_auc": value for column, value in aucs.items()}
    return {**result, f"{name}/{MEAN_AUC}": float(np.mean(list(aucs.values()))), f"{name}/scored_images": scored}


def _scored_rows(challenge: Challenge, truth: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The images a challenge's truth file would hold: every column decided, and for a multiclass challenge
    exactly one diagnosis."""
    rows = known.all(axis=1)
    if challenge.headline == BALANCED_MULTICLASS_ACCURACY:
        rows &= truth.sum(axis=1) == 1
    return rows


def challenge_files(
    name: str, image_ids: Sequence[str], probs: ArrayLike, targets: ArrayLike, known: ArrayLike, classes: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A ground-truth table and a submission in the challenge's layout, over the images ``challenge_scores``
    scores, so ``isic-challenge-scoring classification <truth> <submission>`` recomputes the logged value."""
    challenge = get_challenge(name)
    p = challenge_probabilities(challenge, probs, classes)
    t, k = challenge_truth(challenge, targets, known, classes)
    scored = _scored_rows(challenge, t, k)
    columns = [*challenge.columns, *challenge.unpredicted]
    ids = np.asarray(image_ids, dtype=str)[scored]
    truth = pd.DataFrame(t[scored].astype(float), columns=columns).assign(image=ids)[["image", *columns]]
    submission = pd.DataFrame(p[scored], columns=columns).assign(image=ids)[["image", *columns]]
    return truth, submission
