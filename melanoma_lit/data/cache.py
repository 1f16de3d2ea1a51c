"""A cache of images shrunk once to the size training needs, so each epoch decodes small files.

Full-size dermoscopy originals (the ISIC 2017 ones reach 6688x4439) cost far more to decode than
the ~280 px a 224 px model uses. ``prepare_cache`` writes every image once at a given shorter side;
``use_cache`` points a table at those files where they exist and leaves the originals elsewhere.
A cached file is never refreshed: after replacing originals, delete ``resized/`` and prepare again.
Concurrent ``prepare_cache`` runs on one cache folder are not supported (each removes the other's
in-flight files); any number of readers is fine.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from melanoma_lit.data.images import load_rgb
from melanoma_lit.data.locks import exclusive
from melanoma_lit.errors import ConfigError, DataError

CACHE_SUFFIX = ".jpg"
# In-flight files: "<final name>.<pid>.tmp" beside the final one, renamed into place once verified.
TEMP_SUFFIX = ".tmp"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
_UNSAFE_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")
_SIDE_FOLDER = re.compile(r"s(\d+)")


@dataclass
class PrepareReport:
    """What one ``prepare_cache`` run did; ``corrupt`` holds (original path, reason) pairs."""

    side: int
    folder: str
    total: int = 0
    written: int = 0
    skipped: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        corrupt = [list(pair) for pair in self.corrupt]
        return {**asdict(self), "corrupt": corrupt, "images_per_second": self.images_per_second}


def cached_path(cache_root: str | Path, side: int, source: str, image_id: str) -> Path:
    """Where the cached copy of one image lives: ``cache_root/resized/s{side}/{source}/{image_id}.jpg``.

    Keyed by side because models of different input sizes need different caches, and one side's
    cache also serves every smaller side (see ``use_cache``). Keyed by source because the same ISIC
    id comes from several downloads at different resolutions, and the row's source names the file
    its path points at. Ids that are not plain file names (folder sets use ``folder:Train/x/y.jpg``)
    are flattened and suffixed with a hash of the id, so two ids never share a file.
    """
    return Path(cache_root) / "resized" / f"s{side}" / _file_name(source) / f"{_file_name(image_id)}{CACHE_SUFFIX}"


LOCK_NAME = ".s{side}.lock"  # beside the side's folder: held while one process writes that side


def prepare_cache(
    table: pd.DataFrame,
    cache_root: str | Path,
    side: int,
    workers: int | None = None,
    quality: int = 95,
    progress: bool = True,
) -> PrepareReport:
    """Write every image of ``table`` (columns path, source, image_id) at shorter side ``side``.

    Safe to interrupt and rerun: files are renamed into place only once they decode, leftovers of an
    interrupted run are removed, and finished files are skipped. Images no larger than ``side`` keep
    their size (JPEGs are copied byte for byte). Corrupt originals are listed in the report, not fatal.
    """
    _check_options(side, workers, quality)
    started = time.perf_counter()
    jobs = _jobs(table, Path(cache_root), side)
    _refuse_original_folders(jobs)  # before the lock: a refused run writes nothing
    lock_file = Path(cache_root) / "resized" / LOCK_NAME.format(side=side)
    with exclusive(lock_file, f"the s{side} resize cache in {cache_root}"):  # one process writes a side's files
        return _prepare(jobs, Path(cache_root), side, workers, quality, progress, started)


def _prepare(
    jobs: dict[Path, str],
    cache_root: Path,
    side: int,
    workers: int | None,
    quality: int,
    progress: bool,
    started: float,
) -> PrepareReport:
    folders = {target.parent for target in jobs}
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_temp_files(folder)
    done = {folder / name for folder in folders for name in _finished_names(folder)}
    todo = [(source, str(target)) for target, source in jobs.items() if target not in done]
    report = PrepareReport(side=side, folder=str(cache_root / "resized" / f"s{side}"), total=len(jobs))
    report.skipped = len(jobs) - len(todo)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    chunks = _run(todo, side, quality, workers or available_cores())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"resize cache s{side}", total=len(todo))
        for results in chunks:
            for source, reason in results:
                if reason is None:
                    report.written += 1
                else:
                    report.corrupt.append((source, reason))
            bar.advance(task, len(results))
    report.seconds = time.perf_counter() - started
    return report


def use_cache(table: pd.DataFrame, cache_root: str | Path, side: int) -> tuple[pd.DataFrame, int]:
    """A copy of ``table`` whose paths point at cached files of shorter side >= ``side`` where present.

    The smallest such side wins. Returns the copy and how many rows now read from the cache.
    """
    table = table.copy()
    sources = table["source"].astype(str).to_numpy()
    names = pd.Series([_file_name(image_id) + CACHE_SUFFIX for image_id in table["image_id"].astype(str)], dtype=object)
    paths = table["path"].astype(str).to_numpy(dtype=object)
    swapped = np.zeros(len(table), dtype=bool)
    for folder in _side_folders(Path(cache_root), side):
        for source in np.unique(sources):
            source_folder = folder / _file_name(source)
            hits = ~swapped & (sources == source) & names.isin(_finished_names(source_folder)).to_numpy()
            paths[hits] = [str(source_folder / name) for name in names[hits]]
            swapped |= hits
    table["path"] = paths
    return table, int(swapped.sum())


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _check_options(side: int, workers: int | None, quality: int) -> None:
    if not isinstance(side, int) or side < 16:
        raise ConfigError(f"resize cache side={side!r}: must be an integer of at least 16 pixels (e.g. 280).")
    if workers is not None and workers < 1:
        raise ConfigError(f"resize cache workers={workers}: must be at least 1, or null for every available core.")
    if not 1 <= quality <= 100:
        raise ConfigError(f"resize cache quality={quality}: JPEG quality must be within 1..100 (95 is near-lossless).")


def _file_name(name: str) -> str:
    if _SAFE_NAME.fullmatch(name):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{_UNSAFE_CHARACTER.sub('_', name)[:100]}-{digest}"


def _jobs(table: pd.DataFrame, cache_root: Path, side: int) -> dict[Path, str]:
    """Cached file -> original path, one entry per image."""
    missing = {"path", "source", "image_id"} - set(table.columns)
    if missing:
        raise DataError(f"resize cache: the image table lacks columns {sorted(missing)}; build it with normalise_table")
    jobs: dict[Path, str] = {}
    for path, source, image_id in zip(table["path"], table["source"], table["image_id"], strict=True):
        jobs.setdefault(cached_path(cache_root, side, str(source), str(image_id)), str(path))
    return jobs


def _refuse_original_folders(jobs: dict[Path, str]) -> None:
    """The cache must never write beside, let alone over, the images it is made from."""
    outputs = {target.parent.resolve() for target in jobs}
    inputs = {Path(folder).resolve() for folder in {os.path.dirname(path) for path in jobs.values() if path}}
    clash = sorted(outputs & inputs)
    if clash:
        raise ConfigError(
            f"{clash[0]}: the resize cache would write into a folder of original images. "
            "Set paths.cache_dir to a folder outside every data folder."
        )


def _remove_temp_files(folder: Path) -> None:
    for leftover in folder.glob(f"*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _finished_names(folder: Path) -> set[str]:
    """Names of the cached files in ``folder``; an empty file (a crash before the data reached disk) is not one."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.name.endswith(CACHE_SUFFIX) and e.is_file() and e.stat().st_size > 0}


def _side_folders(cache_root: Path, side: int) -> list[Path]:
    resized = cache_root / "resized"
    if not resized.is_dir():
        return []
    sides = [int(m.group(1)) for p in resized.iterdir() if p.is_dir() and (m := _SIDE_FOLDER.fullmatch(p.name))]
    return [resized / f"s{s}" for s in sorted(s for s in sides if s >= side)]


def _run(
    todo: Sequence[tuple[str, str]], side: int, quality: int, workers: int
) -> Iterator[list[tuple[str, str | None]]]:
    """Results chunk by chunk, in this process for one worker, else in a process pool.

    Not a generator: the pool's workers start here, before the caller starts its progress bar thread,
    so that on Linux they fork (cheap, no re-import of ``__main__``) from a process with no such thread.
    """
    chunk = max(1, min(32, math.ceil(len(todo) / (workers * 8))))
    chunks = [todo[start : start + chunk] for start in range(0, len(todo), chunk)]
    if workers == 1 or len(chunks) <= 1:
        return (_cache_chunk(part, side, quality) for part in chunks)
    context = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
    executor = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context)
    return _collect(executor, [executor.submit(_cache_chunk, part, side, quality) for part in chunks])


def _collect(executor: ProcessPoolExecutor, futures: list[Future]) -> Iterator[list[tuple[str, str | None]]]:
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _cache_chunk(jobs: Sequence[tuple[str, str]], side: int, quality: int) -> list[tuple[str, str | None]]:
    """(original, None) when written, (original, reason) when the original does not decode."""
    results: list[tuple[str, str | None]] = []
    for source, target in jobs:
        try:
            image = load_rgb(source, min_side=side)
        except DataError as error:
            results.append((source, str(error)))
            continue
        _write(source, Path(target), Image.fromarray(image), side, quality)
        results.append((source, None))
    return results


def _write(source: str, target: Path, image: Image.Image, side: int, quality: int) -> None:
    temp = target.with_name(f"{target.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with Image.open(source) as original:
            already_small = original.format == "JPEG" and min(original.size) <= side
        if already_small:
            shutil.copyfile(source, temp)  # no generation loss: cached and original decode alike
            expected = None
        else:
            width, height = image.size
            scale = min(1.0, side / min(width, height))
            expected = (max(1, round(width * scale)), max(1, round(height * scale)))
            if expected != image.size:
                image = image.resize(expected, Image.Resampling.LANCZOS)
            # 4:4:4 chroma: halving colour resolution would blur the pigment network the model looks at
            image.save(temp, format="JPEG", quality=quality, subsampling=0)
        _verify(temp, expected)
        os.replace(temp, target)
    except OSError as error:
        raise DataError(
            f"{target}: cannot write the cached image ({error}). Free disk space or point paths.cache_dir "
            "at a writable folder, then rerun: finished images are kept."
        ) from error
    finally:
        temp.unlink(missing_ok=True)


def _verify(path: Path, expected: tuple[int, int] | None) -> None:
    with Image.open(path) as written:
        written.load()
        if expected is not None and written.size != expected:
            raise OSError(f"wrote {written.size[0]}x{written.size[1]} pixels instead of {expected[0]}x{expected[1]}")
