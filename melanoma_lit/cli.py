"""What every Hydra entry point shares: the config folder, friendly errors, quiet offline defaults."""

from __future__ import annotations

import difflib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma_lit.errors import MelanomaLitError, user_message


def _config_dir() -> Path:
    """The Hydra configs: ``conf/`` inside the package where a wheel put it, else the checkout's ``conf/`` beside
    the package (an editable install, or the source folder on the path), so edits there take effect at once.

    Looked up beside this file rather than imported as ``melanoma_lit.conf``: an editable install of another
    checkout maps that name to its own ``conf/``, which must not win over the folder beside the running code.
    """
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return installed if (installed / "train.yaml").is_file() else package.parent / "conf"


CONFIG_DIR = str(_config_dir())

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Lightning 2.6 trips torch's own pytree deprecation on every predict batch: noise, not advice for our users.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class _NoLightningTips(logging.Filter):
    """Lightning's ``💡 Tip: ... litlogger`` / ``litmodels`` line on every Trainer: an advertisement for its cloud
    services, not advice for our runs. Lightning has no switch for it; this drops that line and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip:") and ("litlogger" in message or "litmodels" in message))


# The logger Lightning's rank_zero_info writes to: lightning_utilities' own until lightning_fabric and then
# pytorch_lightning replace it with theirs on import.
for _name in (
    "lightning_utilities.core.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
):
    logging.getLogger(_name).addFilter(_NoLightningTips())


_EXIT_HOOKS: list[Callable[[int, str], None]] = []


def on_friendly_exit(hook: Callable[[int, str], None]) -> Callable[[], None]:
    """Call ``hook(exit code, message)`` when ``friendly_errors`` ends the command, before it exits: a run's
    record can say how it ended (a SystemExit passes Hydra's job end by). Returns the function that removes it."""
    _EXIT_HOOKS.append(hook)
    return lambda: _EXIT_HOOKS.remove(hook) if hook in _EXIT_HOOKS else None


def _exit(code: int, message: str) -> None:
    _log_to_files(message)
    for hook in list(_EXIT_HOOKS):
        hook(code, message)
    print(f"\nError: {message}\n", file=sys.stderr)
    sys.exit(code)


def friendly_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's own errors into one paragraph on stderr and exit code 2.

    ``HYDRA_FULL_ERROR=1`` keeps the traceback. In a multirun the error is re-raised so that
    Hydra's launcher records the job as failed while the other jobs go on.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except KeyboardInterrupt:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise
            message = (
                f"interrupted (Ctrl-C): {task.__module__.rpartition('.')[2]} stopped before it finished. Every file "
                "it had finished is whole and files it was writing were never put in place (each is written under "
                "a temporary name, then renamed). Run the same command again to do the rest"
                + (", with ckpt_path=last and the same hydra.run.dir to continue training." if _training(task) else ".")
            )
            _exit(130, message)
        except MelanomaLitError as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise
            _exit(2, user_message(error))

    return wrapper


def _training(task: Callable[..., Any]) -> bool:
    return task.__module__.endswith(".train")


def _log_to_files(message: str) -> None:
    """Record an error in the run folder's log file (Hydra's ``<job>.log``) but not on the console, where it is
    printed once: to the file handlers that a ``melanoma_lit`` record reaches, and to no other."""
    logger = logging.getLogger("melanoma_lit")
    if not logger.isEnabledFor(logging.ERROR):
        return
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        current = current.parent if current.propagate else None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run(main: Callable[[], Any], config_name: str) -> None:
    """Run a ``hydra.main`` entry point; when Hydra rejects a key typed on the command line (its message names
    the key, not the alternatives), add the keys that exist there, closest first."""
    try:
        main()
    except SystemExit as stop:
        if stop.code == 1 and (hint := unknown_key_hint(config_name, sys.argv[1:])):
            print(hint, file=sys.stderr)
        raise


# Hydra's command-line flags that take a value (``--hydra-help``), by their long names; ``--info``'s is optional.
_LONG_NAMES = {
    "-c": "--cfg",
    "-p": "--package",
    "-cp": "--config-path",
    "-cn": "--config-name",
    "-cd": "--config-dir",
    "-i": "--info",
}
_VALUE_FLAGS = ("--cfg", "--package", "--config-path", "--config-name", "--config-dir", "--experimental-rerun")
_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def split_command_line(arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """A Hydra command line's overrides, and the values of its flags by long name: ``["--cfg", "job", "a.b=1"]``
    gives ``(["a.b=1"], {"--cfg": "job"})``. Flags without a value (``-m``, ``--resolve``) are left out."""
    overrides: list[str] = []
    flags: dict[str, str] = {}
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        position += 1
        if not argument.startswith("-"):
            overrides.append(argument)
            continue
        name, attached, value = argument.partition("=")  # --cfg=job
        name = _LONG_NAMES.get(name, name)
        if not attached and position < len(arguments):
            following = arguments[position]  # --cfg job
            if name in _VALUE_FLAGS or (name == "--info" and following in _INFO_CHOICES):
                attached, value = "=", following
                position += 1
        if attached:
            flags[name] = value
    return overrides, flags


def unknown_key_hint(config_name: str, arguments: list[str]) -> str | None:
    """``Unknown key optimizer.lrr: did you mean optimizer.lr? ...`` for each ``a.b=value`` override whose key
    is not in the config composed from the other overrides; None when every key exists."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from omegaconf import DictConfig, OmegaConf

    given, flags = split_command_line(arguments)
    if "--config-path" in flags or "--config-dir" in flags:
        return None  # configs from elsewhere: this folder is no reference
    config_name = flags.get("--config-name", config_name)
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except Exception:  # Hydra has already reported the unparsable override
        return None
    if any(o.is_sweep_override() for o in overrides):
        return None  # which sweep value's config would be the reference is ambiguous
    dotted = [
        o for o in overrides if o.type == OverrideType.CHANGE and "." in o.key_or_group and "/" not in o.key_or_group
    ]
    plain = [o.input_line for o in overrides if o not in dotted and o.type == OverrideType.CHANGE]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=plain, return_hydra_config=True)
    except Exception:  # a wrong group choice: Hydra's own message lists the options
        return None
    finally:
        GlobalHydra.instance().clear()
    lines = []
    for override in dotted:
        key = override.key_or_group
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key)
        if not isinstance(parent, DictConfig) or leaf in parent:
            continue
        close = difflib.get_close_matches(leaf, [str(k) for k in parent], n=3, cutoff=0.5)
        known = ", ".join(str(k) for k in parent)
        guess = f" did you mean {' or '.join(f'{parent_key}.{c}' for c in close)}?" if close else ""
        lines.append(f"Unknown key {key}:{guess} {parent_key} has: {known}. (+{key}=... adds a new key.)")
    return "\n".join(lines) or None
