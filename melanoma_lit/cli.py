"""What every Hydra entry point shares: the config folder, friendly errors, quiet offline defaults."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma_lit.errors import MelanomaLitError, user_message

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Lightning 2.6 trips torch's own pytree deprecation on every predict batch: noise, not advice for our users.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def friendly_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's own errors into one paragraph on stderr and exit code 2.

    ``HYDRA_FULL_ERROR=1`` keeps the traceback. In a multirun the error is re-raised so that
    Hydra's launcher records the job as failed while the other jobs go on.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except MelanomaLitError as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise
            message = user_message(error)
            logging.getLogger("melanoma_lit").error("%s", message)
            print(f"\nError: {message}\n", file=sys.stderr)
            sys.exit(2)

    return wrapper


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
