"""Who is in a synthetic set: lesions per class, photographs per lesion, patients, lesion-disjoint splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from melanoma_lit.data.taxonomy import ISIC_CLASSES

DEFAULT_CLASS_FREQUENCIES: dict[str, float] = {
    "NV": 0.30,
    "MEL": 0.18,
    "BCC": 0.12,
    "BKL": 0.12,
    "AK": 0.08,
    "SCC": 0.08,
    "DF": 0.06,
    "VASC": 0.06,
}
_VIEWS_PER_LESION = (np.array([1, 2, 3, 4]), np.array([0.45, 0.30, 0.15, 0.10]))
_SITES = (
    "anterior torso",
    "posterior torso",
    "lower extremity",
    "upper extremity",
    "head/neck",
    "lateral torso",
    "palms/soles",
    "oral/genital",
)
_SITE_WEIGHTS = np.array([0.27, 0.11, 0.20, 0.12, 0.18, 0.05, 0.05, 0.02])
_SUN_EXPOSED_CLASSES = frozenset({"AK", "BCC", "SCC"})
_MEAN_AGE = {"MEL": 60, "NV": 40, "BCC": 67, "AK": 70, "BKL": 62, "DF": 45, "VASC": 45, "SCC": 72}


@dataclass(frozen=True)
class LesionPlan:
    """One lesion: its diagnosis, how many photographs, its patient, and (once assigned) its split."""

    index: int
    cls: str
    views: int
    age: float
    sex: str
    site: str
    split: str = ""


def _class_counts(n: int, frequencies: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: counts sum to ``n`` and follow the frequencies as closely as integers can."""
    exact = {cls: n * f for cls, f in frequencies.items()}
    counts = {cls: int(x) for cls, x in exact.items()}
    by_remainder = sorted(exact, key=lambda c: (-(exact[c] - counts[c]), ISIC_CLASSES.index(c)))
    for cls in by_remainder[: n - sum(counts.values())]:
        counts[cls] += 1
    return counts


def _patient(rng: np.random.Generator, cls: str) -> tuple[float, str, str]:
    """Age, sex and site as the ISIC metadata has them, a few unknown; carcinomas favour older, sun-exposed skin."""
    age = float(np.clip(5 * round(rng.normal(_MEAN_AGE[cls], 14) / 5), 5, 85))
    sex = "male" if rng.random() < 0.53 else "female"
    sun = np.where(np.array(_SITES) == "head/neck", 3.0 if cls in _SUN_EXPOSED_CLASSES else 1.0, 1.0)
    site = str(rng.choice(_SITES, p=_SITE_WEIGHTS * sun / (_SITE_WEIGHTS * sun).sum()))
    unknown = rng.random(3) < (0.02, 0.015, 0.03)
    return (np.nan if unknown[0] else age), ("" if unknown[1] else sex), ("" if unknown[2] else site)


def plan_lesions(n: int, frequencies: dict[str, float], seed: int) -> list[LesionPlan]:
    """Lesions with 1-4 photographs each, class counts exact, in random order."""
    rng = np.random.default_rng([seed, 0])
    lesions: list[LesionPlan] = []
    for cls, count in _class_counts(n, frequencies).items():
        while count > 0:
            views = min(count, int(rng.choice(_VIEWS_PER_LESION[0], p=_VIEWS_PER_LESION[1])))
            count -= views
            lesions.append(LesionPlan(len(lesions), cls, views, *_patient(rng, cls)))
    return [replace(lesions[j], index=i) for i, j in enumerate(rng.permutation(len(lesions)))]


def assign_splits(lesions: list[LesionPlan], splits: Sequence[tuple[str, float]]) -> list[LesionPlan]:
    """Lesion-disjoint splits, per class, each lesion to the split furthest below its share of images."""
    names = [s for s, _ in splits]
    shares = np.array([w for _, w in splits], dtype=float)
    shares /= shares.sum()
    filled: dict[str, np.ndarray] = {}
    out = []
    for plan in lesions:
        got = filled.setdefault(plan.cls, np.zeros(len(names)))
        target = shares * (got.sum() + plan.views)
        pick = int(np.argmax(target - got))
        got[pick] += plan.views
        out.append(replace(plan, split=names[pick]))
    return out
