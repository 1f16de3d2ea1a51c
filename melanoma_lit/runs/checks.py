"""Every numeric and enumerated knob of every command checked before any work starts.

``check_config(cfg, command)`` walks a table of rules, one per config key, and raises one ``ConfigError`` naming
the key, the value given, the allowed range and the fix for the first value that cannot work: ``data.batch_size=0``,
``optimizer.lr=nan``, ``trainer.max_epochs=0``, ``data.input_size=0``, a word where a number belongs. A key that a
command's config does not hold is not checked, so one table serves train, evaluate, predict, export, explain,
prepare and bench; ``_COMMAND_RULES`` holds the keys whose meaning differs by command (``format``,
``batch_size``). Mandatory values (``ckpt=``, ``input=``) left at ``???`` are named with what to pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from melanoma_lit.errors import ConfigError

_HUGE = 10**7  # no count of the project's (batch, epochs, workers, pixels) is meaningful above this


@dataclass(frozen=True)
class Rule:
    """What a config value may be: an int or a float in [low, high] (``open_low``: low itself excluded), one of
    ``choices``, a bool, or null where ``nullable``; ``fix`` is the advice appended to the message."""

    kind: str  # "int" | "float" | "choice" | "bool" | "probability"
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    fix: str = ""
    any_case: bool = False  # a choice read case-insensitively (optimizer and scheduler names)

    def allowed(self) -> str:
        if self.kind == "choice":
            text = " | ".join(str(c) for c in self.choices)
        elif self.kind == "bool":
            text = "true or false"
        else:
            what = "an integer" if self.kind == "int" else "a number"
            left = "(" if self.open_low else "["
            right = ")" if self.open_high else "]"
            low = "-inf" if self.low is None else _number(self.low)
            high = "inf" if self.high is None else _number(self.high)
            text = f"{what} in {left}{low}, {high}{right}"
        return f"{text}, or null" if self.nullable else text

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule, None when it keeps it."""
        if value is None:
            return None if self.nullable else "it may not be null"
        if self.kind == "bool":
            return None if isinstance(value, bool) else "not true or false"
        if self.kind == "choice":
            given = value.lower() if self.any_case and isinstance(value, str) else value
            return None if given in self.choices else "not one of the choices"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "not a number"
        if self.kind == "int" and not (isinstance(value, int) or (math.isfinite(value) and value == int(value))):
            return "not a whole number"
        if not math.isfinite(value):
            return "not a finite number"
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return "too small"
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            return "too large"
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _int(low: int = 0, high: int = _HUGE, nullable: bool = False, fix: str = "") -> Rule:
    return Rule("int", low, high, nullable=nullable, fix=fix)


def _float(low: float | None = 0.0, high: float | None = 1e6, open_low: bool = False, **kwargs: Any) -> Rule:
    return Rule("float", low, high, open_low=open_low, **kwargs)


def _probability(fix: str = "") -> Rule:
    return Rule("float", 0.0, 1.0, fix=fix or "0 switches it off, 1 applies it to every image.")


_EPOCHS = "Give a whole number of epochs of at least 1 (debug=fast_dev_run checks the wiring in one batch)."
_WORKERS = "0 loads in the main process; null picks one worker per CPU core."
_INPUT = "null takes the backbone's native size; otherwise give the side in pixels, e.g. 224."

RULES: dict[str, Rule] = {
    # data
    "data.batch_size": _int(1, fix="Give the number of images per training step, e.g. 32."),
    "data.eval_batch_size": _int(1, nullable=True, fix="null uses data.batch_size."),
    "data.num_workers": _int(0, 1024, nullable=True, fix=_WORKERS),
    "data.input_size": _int(8, 4096, nullable=True, fix=_INPUT),
    "data.num_folds": _int(2, 10_000, fix="k-fold needs at least 2 folds; 5 is the default."),
    "data.fold_seed": _int(0, 2**32 - 1),
    "data.pin_memory": Rule("bool"),
    "data.persistent_workers": Rule("bool"),
    "data.balanced_sampler": Rule("bool"),
    "data.allow_missing": Rule("bool"),
    "data.synthetic.n": _int(16, _HUGE, fix="The synthetic set needs enough images for every fold, e.g. 2000."),
    "data.synthetic.size": _int(16, 4096, fix="Give the side of the generated images in pixels, e.g. 128."),
    "data.synthetic.seed": _int(0, 2**32 - 1),
    # augmentation
    **{f"augment.{key}": _probability() for key in ("hflip", "vflip", "transpose", "rotate", "color_jitter")},
    **{f"augment.{key}": _probability() for key in ("blur", "noise", "coarse_dropout")},
    "augment.rotate_limit": _int(0, 180, fix="Give the largest rotation in degrees."),
    **{f"augment.{key}": _float(0.0, 1.0) for key in ("brightness", "contrast", "saturation")},
    "augment.hue": _float(0.0, 0.5, fix="Hue shifts are a fraction of the colour circle, at most 0.5."),
    # model
    "backbone.drop_path_rate": Rule("float", 0.0, 1.0, open_high=True),
    "backbone.pretrained": Rule("bool"),
    "model.head.pool": Rule("choice", choices=("avg", "max", "avgmax", "catavgmax", "gem")),
    "model.head.dropout": Rule("float", 0.0, 1.0, open_high=True, fix="0 switches dropout off."),
    "model.head.hidden_dim": _int(0, 1 << 16, fix="0 puts the classifier straight on the pooled features."),
    "model.loss.label_smoothing": Rule("float", 0.0, 1.0, open_high=True),
    "model.loss.focal_gamma": _float(0.0, 100.0, fix="0 is plain binary cross-entropy; 2 is usual for focal loss."),
    "model.tta": _int(1, 8, fix="Give the number of dihedral views averaged, 1 (none) to 8."),
    "model.compile": Rule("bool"),
    "model.channels_last": Rule("bool"),
    "model.temperature": Rule("choice", choices=("none", "global", "per_class")),
    # optimisation
    "optimizer.name": Rule("choice", choices=("adam", "adamw", "sgd"), any_case=True),
    "optimizer.lr": _float(0.0, 10.0, open_low=True, fix="Give a positive learning rate, e.g. 3e-4 for adam."),
    "optimizer.weight_decay": _float(0.0, 10.0),
    "optimizer.layer_decay": Rule("float", 0.0, 1.0, open_low=True, fix="1 gives every layer optimizer.lr."),
    "optimizer.momentum": Rule("float", 0.0, 1.0, open_high=True),
    "scheduler.name": Rule("choice", choices=("plateau", "cosine", "onecycle", "none"), nullable=True, any_case=True),
    "scheduler.patience": _int(0, 10_000),
    "scheduler.factor": Rule("float", 0.0, 1.0, open_low=True, open_high=True, fix="e.g. 0.5 halves the lr."),
    "scheduler.min_lr": _float(0.0, 10.0),
    "scheduler.warmup_epochs": _float(0.0, 10_000.0),
    # trainer
    "trainer.max_epochs": _int(1, _HUGE, fix=_EPOCHS),
    "trainer.min_epochs": _int(0, _HUGE),
    "trainer.accumulate_grad_batches": _int(1, 100_000),
    "trainer.gradient_clip_val": _float(0.0, 1e6, open_low=True, nullable=True, fix="null switches clipping off."),
    "trainer.log_every_n_steps": _int(1, _HUGE),
    "trainer.num_sanity_val_steps": Rule("int", -1, _HUGE, fix="-1 runs the whole validation set, 0 none."),
    "trainer.deterministic": Rule("bool"),
    "trainer.enable_model_summary": Rule("bool"),
    "trainer.accelerator": Rule("choice", choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu")),
    "trainer.limit_train_batches": _float(0.0, _HUGE, open_low=True, nullable=True, fix="1.0 = every batch."),
    "trainer.limit_val_batches": _float(0.0, _HUGE, nullable=True),
    "trainer.limit_predict_batches": _float(0.0, _HUGE, open_low=True, nullable=True),
    "trainer.overfit_batches": _float(0.0, _HUGE, nullable=True),
    "callbacks.early_stopping.patience": _int(0, _HUGE),
    "callbacks.model_checkpoint.save_top_k": Rule("int", -1, _HUGE, fix="-1 keeps every checkpoint."),
    "callbacks.media.table_rows": _int(0, 100_000),
    "callbacks.media.gradcam": _int(0, 10_000),
    "callbacks.media.thumbnail": _int(16, 4096),
    "callbacks.early_stopping.min_delta": _float(0.0, 1e6),
    "callbacks.backbone_freeze.unfreeze_at_epoch": _int(0, _HUGE),
    "callbacks.media.every_n_epochs": _int(0, _HUGE),
    "seed": _int(0, 2**32 - 1, nullable=True),
    "monitor_mode": Rule("choice", choices=("max", "min")),
    # prepare and bench
    "prepare.side": _int(16, 16384, nullable=True, fix="null derives it from prepare.sizes or the backbone."),
    "prepare.workers": _int(1, 1024, nullable=True, fix="null uses every available core."),
    "prepare.quality": _int(1, 100, fix="JPEG quality, e.g. 95."),
    "bench.warmup_steps": _int(0, _HUGE),
    "bench.steps": _int(1, _HUGE),
    "bench.eval_steps": _int(1, _HUGE),
    # inference (evaluate, predict, explain)
    "tta": _int(1, 8, nullable=True, fix="null uses each checkpoint's own model.tta."),
    "num_workers": _int(0, 1024, nullable=True, fix=_WORKERS),
    "batch_size": _int(1, fix="Give the number of images per forward pass, e.g. 32."),
}

_SUBMISSION = ("auto", "isic2017", "isic2018", "isic2019", "generic")
_COMMAND_RULES: dict[str, dict[str, Rule]] = {
    "evaluate": {"format": Rule("choice", choices=_SUBMISSION)},
    "predict": {"format": Rule("choice", choices=_SUBMISSION)},
    "export": {
        "format": Rule("choice", choices=("onnx", "torchscript")),
        "opset": _int(7, 100, nullable=True, fix="null takes the exporter's recommended opset."),
        "check": Rule("bool"),
        "tolerance": _float(0.0, 1.0, open_low=True),
    },
    "explain": {"method": Rule("choice", choices=("gradcam", "gradcam++", "xgradcam", "layercam"))},
}

# What each command cannot start without, and what to pass.
_MANDATORY: dict[str, str] = {
    "ckpt": "a .ckpt file, a training run folder (its checkpoints/best.ckpt) or a multirun folder",
    "input": "a folder of images (searched recursively) or a CSV listing them",
}


def check_config(cfg: DictConfig, command: str) -> None:
    """Raise ConfigError for the first knob of ``cfg`` that is missing, of the wrong type or out of range."""
    for key, what in _MANDATORY.items():
        if key in list(cfg) and OmegaConf.is_missing(cfg, key):  # `key in cfg` is False for ???
            raise ConfigError(f"{key} is not set: {command} needs {key}=<{what}>. Add it to the command line.")
    rules = {**RULES, **_COMMAND_RULES.get(command, {})}
    for key, rule in rules.items():
        value = _select(cfg, key)
        if value is _ABSENT:
            continue
        if isinstance(value, list) and key in ("augment.scale", "augment.ratio"):
            continue
        if (why := rule.problem(value)) is not None:
            raise ConfigError(
                f"{key}={_show(value)}: {why}; {key} must be {rule.allowed()}. "
                + (rule.fix if "e.g." in rule.fix else f"{rule.fix} Fix it, e.g. {key}={_example(rule)}.").strip()
            )
    _check_relations(cfg)


def _check_relations(cfg: DictConfig) -> None:
    low, high = _select(cfg, "trainer.min_epochs"), _select(cfg, "trainer.max_epochs")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        raise ConfigError(
            f"trainer.min_epochs={low} is above trainer.max_epochs={high}: training would stop before it may. "
            f"Lower trainer.min_epochs to at most {high}, or raise trainer.max_epochs."
        )
    for key in ("trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_predict_batches"):
        value = _select(cfg, key)
        if isinstance(value, float) and not value.is_integer() and value > 1:
            raise ConfigError(
                f"{key}={value}: a fraction of the batches is at most 1.0, a number of batches is a whole number. "
                f"Fix it, e.g. {key}=1.0 (every batch) or {key}=10."
            )
    fold = _select(cfg, "data.fold")
    folds = fold if isinstance(fold, list) else [fold]
    for item in folds:
        if item is _ABSENT or item in ("all", "official"):
            continue
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise ConfigError(
                f"data.fold={_show(fold)}: a fold is a whole number from 0, 'all' (train on everything) or "
                "'official' (the source's own split), or a list of numbered folds. Fix it, e.g. data.fold=0."
            )
    for key, bounds in (("augment.scale", (0.0, 1.0)), ("augment.ratio", (0.0, 100.0))):
        pair = _select(cfg, key)
        if pair is _ABSENT:
            continue
        ok = (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
            and bounds[0] < pair[0] <= pair[1] <= bounds[1]
        )
        if not ok:
            raise ConfigError(
                f"{key}={_show(pair)}: give [low, high] with {bounds[0]} < low <= high <= {bounds[1]}, "
                f"e.g. {key}=[0.35,1.0] (scale) or [0.75,1.3333] (ratio)."
            )


_ABSENT = object()


def _select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node or OmegaConf.is_missing(node, part):
            return _ABSENT
        node = node._get_node(part)
        if isinstance(node, DictConfig | ListConfig):
            if node._is_none():
                return None
            continue
        try:
            node = node._value() if not OmegaConf.is_interpolation(node) else node._dereference_node()._value()
        except Exception:  # an interpolation that does not resolve here (${hydra:...} outside a run)
            return _ABSENT
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _example(rule: Rule) -> str:
    if rule.kind == "choice":
        return str(rule.choices[0])
    if rule.kind == "bool":
        return "true"
    if rule.low is None:
        return "0"
    low = rule.low if not rule.open_low else rule.low + (1 if rule.kind == "int" else 0.5)
    if rule.high is not None:
        low = min(low, rule.high)
    return _number(low)


def check_writable_folder(folder: str | Path, key: str) -> None:
    """Raise ConfigError unless ``folder`` exists as a writable folder or can be made one."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(
            f"{key}={folder}: {existing} is a file, not a folder, so nothing can be written below it. "
            f"Point {key} at a folder (or a path under one)."
        )
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only(existing):
        raise ConfigError(
            f"{key}={folder}: {existing} cannot be written (no write permission or a read-only file system). "
            f"Point {key} at a folder you can write, or fix its permissions."
        )


def _read_only(folder: Path) -> bool:
    """``os.access`` says yes to root on a read-only mode; try a file there to know."""
    try:
        probe = folder / f".melanoma_lit-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        return True
    return False


def check_paths(cfg: DictConfig, keys: Sequence[str]) -> None:
    """Each of ``keys`` (an output folder or file) can be written, before any long work."""
    for key in keys:
        value = _select(cfg, key)
        if value is _ABSENT or value is None:
            continue
        path = Path(str(value))
        check_writable_folder(path if key.endswith("output_dir") else path.parent, key)
