"""Generating a synthetic set into a folder: checked parameters, parallel drawing, and the markers of a generation.

``.generating`` (written first) and ``.complete`` (written last, holding the parameters) mark a folder as this
generator's: only such a folder is cleared, and ``ensure_synthetic`` reuses a complete one with the same parameters.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from melanoma_lit.data.atomic import replaced, written_as
from melanoma_lit.data.locks import exclusive
from melanoma_lit.data.synthetic.cohort import DEFAULT_CLASS_FREQUENCIES, plan_lesions
from melanoma_lit.data.synthetic.layouts import (
    ISIC2017_CLASSES,
    LAYOUTS,
    Job,
    layout_dirs,
    place,
    table_files,
    write_tables,
)
from melanoma_lit.data.synthetic.lesions import RECIPES
from melanoma_lit.data.synthetic.render import photograph, random_skin_tone
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Bump when the drawing changes: ensure_synthetic then regenerates cached folders.
GENERATOR_VERSION = 1
COMPLETE_MARKER = ".complete"
_STARTED_MARKER = ".generating"


def _render_chunk(out: str, jobs: list[Job], size: tuple[int, int], seed: int) -> int:
    for job in jobs:
        lesion_rng = np.random.default_rng([seed, 1, job.lesion])
        lesion = RECIPES[job.cls](lesion_rng)
        skin = random_skin_tone(lesion_rng)
        image = photograph(lesion, skin, np.random.default_rng([seed, 2, job.index]), size)
        image.save(Path(out) / job.relpath, "JPEG", quality=90)
    return len(jobs)


def _render_all(
    out: Path, jobs: list[Job], size: tuple[int, int], seed: int, workers: int, label: str, progress: bool
) -> None:
    chunk = max(1, min(64, math.ceil(len(jobs) / (workers * 8))))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    columns = (TextColumn("synthetic {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    if workers == 1:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(label, total=len(jobs))
            for part in chunks:
                bar.advance(task, _render_chunk(str(out), part, size, seed))
        return
    # fork needs no importable __main__; workers fork at submit, before the progress bar starts its thread
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(_render_chunk, str(out), part, size, seed) for part in chunks]
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(label, total=len(jobs))
            for future in as_completed(futures):
                bar.advance(task, future.result())


def _prepare_out(out: Path) -> None:
    """Remove an earlier synthetic set from ``out``: only the files its manifest lists, the files that the
    parameters in its ``.complete`` or ``.generating`` marker make (names derive from the parameters alone). A
    folder holding anything else is refused, naming those files, and nothing is deleted."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder. Choose another output path for the synthetic data.")
    out.mkdir(parents=True, exist_ok=True)
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink())
    if not present:
        return
    marker = next((out / m for m in (COMPLETE_MARKER, _STARTED_MARKER) if (out / m).is_file()), None)
    if marker is None:
        raise DataError(
            f"{out}: folder is not empty and holds no synthetic data ({COMPLETE_MARKER} missing; first files: "
            f"{', '.join(present[:3])}). Synthetic generation writes into its own folder: give an empty or new folder."
        )
    listed = _manifest(marker)
    ours = [p for p in present if _written_by_us(p, listed)]
    foreign = sorted(set(present) - set(ours))
    if foreign:
        raise DataError(
            f"{out}: holds {len(foreign)} file(s) the synthetic generator did not write (first: "
            f"{', '.join(foreign[:3])}); regenerating would clear the folder, so nothing was deleted. Move those files "
            "out of the folder, or give another output folder for the synthetic data."
        )
    for relpath in ours:
        (out / relpath).unlink()
    for folder in sorted({(out / p).parent for p in ours}, key=lambda f: len(f.parts), reverse=True):
        while folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


_MARKERS = {COMPLETE_MARKER, _STARTED_MARKER, COMPLETE_MARKER + ".tmp"}  # .tmp: earlier versions' temporary name
# A marker without parameters (a generation killed while writing it): the generator's own names (ISIC ids, CSVs).
_LEGACY = re.compile(r"(?:[^/]+/){0,2}ISIC_\d{7}\.jpg|ISIC[-_][^/]*\.csv(?:\.tmp)?")


def _manifest(marker: Path) -> set[str] | None:
    """The files the generation recorded in ``marker`` writes; None where the marker holds no parameters (a
    generation killed before writing them)."""
    try:
        params = json.loads(marker.read_text())
        layout = params["layout"]
        jobs = place(plan_lesions(params["n"], params["class_frequencies"], params["seed"]), layout, params["seed"])
    except (json.JSONDecodeError, OSError, KeyError, TypeError, ValueError, ConfigError):
        return None
    return {job.relpath for job, _ in jobs} | set(table_files(layout))


def _written_by_us(relpath: str, listed: set[str] | None) -> bool:
    relpath = str(written_as(relpath) or relpath)  # a file a killed generation was still writing
    if relpath in _MARKERS:
        return True
    if listed is not None:
        return relpath in listed or relpath.removesuffix(".tmp") in listed
    return _LEGACY.fullmatch(relpath) is not None


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    wh = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(wh) != 2 or not all(isinstance(s, int | np.integer) and s >= 16 for s in wh):
        raise ConfigError(f"synthetic size={size!r}: give an int >= 16 (square) or a (width, height) pair of them.")
    return int(wh[0]), int(wh[1])


def _normalise_frequencies(frequencies: dict[str, float] | None, layout: str) -> dict[str, float]:
    frequencies = dict(DEFAULT_CLASS_FREQUENCIES if frequencies is None else frequencies)
    unknown = sorted(set(frequencies) - set(ISIC_CLASSES))
    if unknown:
        raise ConfigError(f"synthetic class_frequencies: unknown class(es) {unknown}; use {list(ISIC_CLASSES)}.")
    if any(not math.isfinite(f) or f < 0 for f in frequencies.values()):
        raise ConfigError(f"synthetic class_frequencies={frequencies}: every frequency must be a finite number >= 0.")
    allowed = ISIC2017_CLASSES if layout == "isic2017" else ISIC_CLASSES
    kept = {cls: float(frequencies.get(cls, 0.0)) for cls in ISIC_CLASSES if cls in allowed}
    total = sum(kept.values())
    if total <= 0:
        raise ConfigError(
            f"synthetic class_frequencies={frequencies}: no positive frequency for the classes of layout "
            f"'{layout}' ({list(allowed)})."
        )
    return {cls: f / total for cls, f in kept.items() if f > 0}


def _parameters(
    n: int, size: int | Sequence[int], layout: str, seed: int, class_frequencies: dict[str, float] | None
) -> dict:
    if layout not in LAYOUTS:
        raise ConfigError(f"synthetic layout='{layout}': choose one of {list(LAYOUTS)}.")
    if not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"synthetic n={n!r}: the number of images must be an int >= 1.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"synthetic seed={seed!r}: give an int >= 0.")
    return {
        "generator_version": GENERATOR_VERSION,
        "n": int(n),
        "size": list(_parse_size(size)),
        "layout": layout,
        "seed": int(seed),
        "class_frequencies": {c: round(f, 12) for c, f in _normalise_frequencies(class_frequencies, layout).items()},
    }


def generate(
    out: str | Path,
    n: int = 2000,
    size: int | tuple[int, int] = 256,
    layout: str = "isic2019",
    seed: int = 0,
    workers: int | None = None,
    class_frequencies: dict[str, float] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic images and their CSVs into ``out`` in the official ``layout``; returns ``out``.

    ``class_frequencies`` maps classes to relative image frequencies (absent classes get none).
    The folder is cleared first; ``.complete`` holding the parameters is written last.
    """
    out = Path(out).expanduser().resolve()
    with exclusive(_lock_file(out), f"the synthetic set {out}"):
        return _generate(out, n, size, layout, seed, workers, class_frequencies, progress)


def _lock_file(out: Path) -> Path:
    """Beside the folder, not in it: generating clears the folder."""
    return out.parent / f".{out.name}.lock"


def _generate(
    out: Path,
    n: int,
    size: int | tuple[int, int],
    layout: str,
    seed: int,
    workers: int | None,
    class_frequencies: dict[str, float] | None,
    progress: bool,
) -> Path:
    params = _parameters(n, size, layout, seed, class_frequencies)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError(f"synthetic workers={workers}: give an int >= 1 (or None for all cores).")
    _prepare_out(out)
    log.info("generating %d synthetic images (%s layout, seed %d) into %s", params["n"], layout, params["seed"], out)
    lesions = plan_lesions(params["n"], params["class_frequencies"], params["seed"])
    jobs = place(lesions, layout, params["seed"])
    # The parameters, before the first image: they name every file a later run may remove (_manifest).
    (out / _STARTED_MARKER).write_text(json.dumps(params, indent=2))
    for relpath in {str(Path(job.relpath).parent) for job, _ in jobs} | set(layout_dirs(layout)):
        (out / relpath).mkdir(parents=True, exist_ok=True)

    wh = (params["size"][0], params["size"][1])
    _render_all(out, [job for job, _ in jobs], wh, params["seed"], workers, f"{layout} {wh[0]}x{wh[1]}", progress)
    write_tables(out, layout, jobs)
    with replaced(out / COMPLETE_MARKER) as partial:
        partial.write_text(json.dumps(params, indent=2))
    (out / _STARTED_MARKER).unlink()
    return out


def ensure_synthetic(
    out: str | Path,
    n: int,
    size: int | tuple[int, int],
    layout: str = "isic2019",
    seed: int = 0,
    *,
    class_frequencies: dict[str, float] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate into ``out`` unless a complete generation with the same parameters is already there."""
    out = Path(out).expanduser().resolve()
    marker = out / COMPLETE_MARKER
    wanted = _parameters(n, size, layout, seed, class_frequencies)
    with exclusive(_lock_file(out), f"the synthetic set {out}"):
        if marker.exists():
            try:
                found = json.loads(marker.read_text())
            except json.JSONDecodeError:
                found = None
            if found == wanted:
                return out
        return _generate(out, n, size, layout, seed, workers, class_frequencies, progress)
