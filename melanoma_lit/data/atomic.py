"""Files that appear whole or not at all: written under a temporary name beside them, then renamed into place.

A reader (the sweep report while jobs run, a job waiting for another's folds file) never sees half a file, and
an interrupt or a crash leaves the earlier file, or none, never a truncated one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PARTIAL = re.compile(r"\.(?P<name>.+)\.\d+\.partial")


def written_as(path: str | Path) -> Path | None:
    """The file a leftover temporary ``path`` of ``replaced`` was to become (a writer killed before the rename);
    None for any other path."""
    path = Path(path)
    found = _PARTIAL.fullmatch(path.name)
    return path.with_name(found["name"]) if found else None


@contextmanager
def replaced(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` when the block ends, removed if it fails."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # per process: parallel writers never share it
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
