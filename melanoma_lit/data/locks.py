"""One process at a time on a file that the jobs of a sweep share (synthetic set, folds file, resize cache).

Jobs of a SLURM array or of the ``gpus`` launcher start together on one cache folder: the first creates the
shared file under an inter-process lock, the others wait for it and then use what it made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


@contextmanager
def exclusive(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold ``lock_file`` (created with its folder) for the block; say so when another process holds it."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is creating %s; waiting for it (%s)", what, lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
