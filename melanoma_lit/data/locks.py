"""One process at a time on a file that the jobs of a sweep share (synthetic set, folds file, resize cache).

Jobs of a SLURM array or of the ``gpus`` launcher start together on one cache folder: the first creates the
shared file under an inter-process lock, the others wait for it and then use what it made.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from melanoma_lit.data.atomic import replaced
from melanoma_lit.errors import ConfigError

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


OWNER_SUFFIX = ".owner.json"  # beside a held lock: who holds it (pid, host, command, since)


def hold(lock_file: str | Path, what: str) -> FileLock:
    """Take ``lock_file`` for the life of this process (or until ``release``), without waiting; when another
    process holds it, raise ConfigError naming that process (its PID, host, command and start time)."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    owner = lock_file.with_name(lock_file.name + OWNER_SUFFIX)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"{what} is in use by another command ({_describe(owner)}); two commands writing one folder would mix "
            "their files. Wait for it to end (or stop it), or give this command another folder."
        ) from None
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with replaced(owner) as partial:
        partial.write_text(json.dumps(record))
    return lock


def _describe(owner: Path) -> str:
    try:
        record = json.loads(owner.read_text())
        return f"PID {record['pid']} on {record['host']} since {record['since']}: {record['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet recorded itself"
