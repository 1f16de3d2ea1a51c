"""W&B and MLflow loggers that record the run's full resolved config and behave well offline and in sweeps."""

from __future__ import annotations

import logging
import netrc
import os
import socket
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pytorch_lightning.loggers import MLFlowLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from melanoma_lit.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_DEFAULT_HOST = "https://api.wandb.ai"
_announced: set[str] = set()


def wandb_mode(offline: bool | None = None, timeout: float = 3.0) -> str:
    """``online`` or ``offline`` (or ``WANDB_MODE`` as set); ``offline=None`` decides by credentials and network.

    The first automatic switch to offline is announced once per process, with the command that uploads later.
    """
    if offline is not None:
        return "offline" if offline else "online"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    host = os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_HOST)
    reason = None
    if not _has_api_key(host):
        reason = "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    elif not _reachable(host, timeout):
        reason = f"{host} is not reachable"
    if reason is None:
        return "online"
    if "offline" not in _announced:
        _announced.add("offline")
        log.warning("W&B logs offline: %s. Upload later with `wandb sync <run dir>/wandb/offline-run-*`.", reason)
    return "offline"


def load_config(path: str | Path | None) -> dict[str, Any] | None:
    """The resolved config that ``train`` saves before it creates loggers."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"config_file={path} not found: loggers read the config.yaml that training writes first")
    return yaml.safe_load(Path(path).read_text())


class WandbRunLogger(WandbLogger):
    """Lightning's W&B logger with the full config, automatic offline mode, and one W&B run per sweep job.

    ``log_model`` works offline too: the checkpoint artifact is stored with the run and uploaded by ``wandb sync``.
    """

    def __init__(self, config_file: str | Path | None = None, offline: bool | None = None, **kwargs: Any) -> None:
        import wandb

        if wandb.run is not None:  # a previous job of this process (a sweep): its run is complete
            wandb.finish()
        super().__init__(mode=wandb_mode(offline), config=load_config(config_file), **kwargs)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The run's config wins: the model's hyperparameters only add keys it does not already have."""
        self.experiment.config.setdefaults(_as_dict(params))


class MLflowRunLogger(MLFlowLogger):
    """Lightning's MLflow logger that logs the full config as params and as ``config.yaml``, each key once.

    MLflow params are immutable, so keys already logged (config first, then the model's) are not sent again.
    """

    def __init__(self, config_file: str | Path | None = None, **kwargs: Any) -> None:
        # tag values are strings: a tracking server's REST API refuses others (``fold: 0``), a local store not
        tags = kwargs.pop("tags", None)
        super().__init__(tags={key: str(value) for key, value in tags.items()} if tags else tags, **kwargs)
        self._config_file = config_file
        self._pending_config = load_config(config_file)
        self._logged_params: set[str] = set()

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        flat = _flatten(_as_dict(params))
        if self._pending_config is not None:
            flat = {**flat, **_flatten(self._pending_config)}
            self.experiment.log_artifact(self.run_id, str(self._config_file))
            self._pending_config = None
        new = {key: value for key, value in flat.items() if key not in self._logged_params}
        self._logged_params.update(new)
        if new:
            super().log_hyperparams(new)


def _as_dict(params: Any) -> dict[str, Any]:
    return dict(vars(params) if isinstance(params, Namespace) else params or {})


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a/b/c`` keys, the way Lightning names MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        flat.update(_flatten(value, f"{name}/") if isinstance(value, Mapping) else {name: value})
    return flat


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(host).hostname or host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, timeout: float) -> bool:
    url = urlparse(host)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False
