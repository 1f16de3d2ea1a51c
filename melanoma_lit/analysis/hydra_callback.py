"""The sweep report written when a multirun ends: a Hydra callback (conf/hydra/default.yaml lists it).

Imported by Hydra in every run, so it imports the report itself only when a sweep ends.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from melanoma_lit.errors import MelanomaLitError

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """Writes ``<sweep dir>/report/`` when a multirun ends (see melanoma_lit.analysis.sweep_report).

    A failed job makes Hydra's sweepers raise after the batch, so ``on_multirun_end`` never comes; the report is
    then written at exit instead, listing the failed jobs (and those never launched).
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(config.hydra.sweep.dir)
        atexit.register(self._report_in_new_process)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._report_in_new_process)
        if self._sweep_dir is not None:
            write_sweep_report(self._sweep_dir)

    def _report_in_new_process(self) -> None:
        """At exit the interpreter is shutting down and refuses imports that start threads (the report needs some),
        so a fresh one writes the report."""
        subprocess.run([sys.executable, "-m", "melanoma_lit.report", str(self._sweep_dir)], check=False)


def write_sweep_report(sweep_dir: Path) -> None:
    """The report of a finished sweep; a report that cannot be written is logged, never fails the sweep."""
    from melanoma_lit.analysis.sweep_report import write_report

    retry = f"python -m melanoma_lit.report {sweep_dir}"
    try:
        files = write_report(sweep_dir)
    except MelanomaLitError as error:
        log.warning("no sweep report: %s (retry: %s)", error, retry)
        return
    except Exception:
        log.exception("could not write the sweep report; retry with: %s", retry)
        return
    log.info("sweep report: %s and %s", files.markdown, files.html)
