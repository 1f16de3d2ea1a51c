"""python -m melanoma_lit.bench [overrides]: images per second of every training stage; bench.json in the run folder.

The model ceiling (forward, loss, backward and optimiser step on a random uint8 batch already on the device) is
what the accelerator can do; the data loader, the Lightning training loop, validation and prediction are timed on
the configured data, and ``prepare`` on ISIC-sized originals. A loop well below the ceiling waits on data or on
the host. Each timing covers ``steps`` batches after ``warmup_steps`` untimed ones and synchronises the device
only where its window opens and closes, so queued GPU work is counted without being serialised.
"""

from __future__ import annotations

import platform
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import pytorch_lightning as pl
import timm
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from melanoma_lit.callbacks.throughput import Throughput, ThroughputTimer, Window
from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.cache import available_cores, prepare_cache
from melanoma_lit.data.sources import read_isic2019
from melanoma_lit.data.synthetic import ensure_synthetic
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.prepare import resolve_side
from melanoma_lit.runs.checks import check_config
from melanoma_lit.runs.files import write_json
from melanoma_lit.train import build_datamodule, build_model, instantiate_all

# The timed loop skips validation on purpose (validation is timed on its own).
warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
# Trainer precision -> autocast dtype of the ceiling, so that both run the same arithmetic.
AUTOCAST: dict[str, torch.dtype | None] = {"32-true": None, "bf16-mixed": torch.bfloat16}
# Table rows, in order; a stage that was not measured (the compiled ceiling by default) is left out.
STAGES: dict[str, str] = {
    "ceiling": "model ceiling",
    "ceiling_compiled": "ceiling, torch.compile",
    "loader": "data loader alone",
    "loop": "training loop",
    "validation": "validation",
    "prediction": "prediction",
    "prepare": "prepare (resize cache)",
}


class PeakMemory:
    """Peak GPU memory allocated inside the ``with`` block, in MiB (``mib``); None off CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in AUTOCAST:
        raise ConfigError(
            f"trainer.precision={precision}: the bench times {' or '.join(AUTOCAST)} "
            "(trainer=gpu is bf16-mixed, trainer=cpu 32-true)."
        )
    return AUTOCAST[precision]


def measure_ceiling(
    model: LesionClassifier, batch_size: int, device: torch.device, precision: str, warmup: int, steps: int
) -> Throughput:
    """Training steps on one random uint8 batch already on ``device``: the most any input pipeline can feed.

    Same network, memory layout, normalisation, loss and optimiser as the training loop, under the trainer's
    precision (bf16 autocast or fp32); only data loading and Lightning are missing.
    """
    dtype = autocast_dtype(precision)
    model = model.to(device).train()
    height, width = model.preprocessing.input_size
    images = torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8, device=device)
    targets = torch.randint(0, 2, (batch_size, len(model.classes)), device=device).float()
    known = torch.ones_like(targets)
    optimizer = model.create_optimizer()
    window = Window(warmup, steps, device)
    with PeakMemory(device) as peak:
        while not window.closed:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model.criterion(model(images), targets, known)
            loss.backward()
            optimizer.step()
            window.tick(batch_size)
    optimizer.zero_grad(set_to_none=True)  # frees the gradients, which would otherwise add to later peaks
    return window.result(peak.mib)


def measure_loader(loader: DataLoader, warmup: int, steps: int) -> Throughput:
    """Batches out of the DataLoader alone (decode, augment, collate, pin), re-iterated across epochs."""
    window = Window(warmup, steps, torch.device("cpu"))
    for batch in _endless(loader):
        if window.tick(len(batch["image"])):
            break
    return window.result()


def _endless(loader: DataLoader) -> Iterator[Any]:
    if len(loader) == 0:
        raise DataError("the training loader yields no batch: the training split is empty or smaller than a batch.")
    while True:
        yield from loader


def measure_prepare(
    originals: Sequence[dict[str, Any]], folder: Path, side: int, workers: int | None, quality: int
) -> Throughput:
    """``prepare_cache`` of ISIC-sized JPEGs into an empty temporary cache, so every image is decoded and written.

    The originals are drawn by the synthetic generator once per size and count, into ``folder``, and reused.
    """
    tables = []
    for spec in originals:
        width, height = spec["size"]
        root = ensure_synthetic(
            folder / f"{width}x{height}-n{spec['n']}", n=spec["n"], size=(width, height), progress=False
        )
        tables.append(read_isic2019(root).assign(source=f"{width}x{height}"))  # one source per size: ids repeat
    with tempfile.TemporaryDirectory(prefix="melanoma_lit-bench-") as cache:
        report = prepare_cache(
            pd.concat(tables, ignore_index=True), cache, side, workers=workers, quality=quality, progress=False
        )
    if report.corrupt:
        raise DataError(f"prepare could not decode generated originals: {report.corrupt[0][1]}")
    return Throughput(report.written, report.seconds)


def _trainer(cfg: DictConfig, timer: ThroughputTimer, log: bool = False, **settings: Any) -> pl.Trainer:
    """The configured Trainer (device, precision, cudnn autotuning, callbacks), keeping no checkpoint.

    ``log`` attaches the configured loggers too: the training loop logs as training does.
    """
    loggers = instantiate_all(cfg.get("logger")) if log else []
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[*instantiate_all(cfg.get("callbacks")), timer],
        logger=loggers or False,
        enable_checkpointing=False,
        **settings,
    )
    if trainer.num_devices != 1:
        raise ConfigError(f"the bench times one device, not {trainer.num_devices}: set trainer.devices=1.")
    return trainer


def _timed(trainer: pl.Trainer, timer: ThroughputTimer, run: Callable[[], object]) -> Throughput:
    with PeakMemory(trainer.strategy.root_device) as peak:
        run()
    return timer.window.result(peak.mib)


def _eval_steps(loader: DataLoader, warmup: int, wanted: int) -> int:
    """Timed evaluation batches: full ones only, since a short last batch re-tunes cudnn inside the window."""
    full = len(loader.dataset) // loader.batch_size
    if full <= warmup:
        raise DataError(
            f"the validation fold holds {full} full batches of {loader.batch_size} images, not more than "
            f"bench.warmup_steps={warmup}: lower data.eval_batch_size or bench.warmup_steps."
        )
    return min(wanted, full - warmup)


def _check(bench: DictConfig) -> None:
    for key in ("warmup_steps", "steps", "eval_steps"):
        if not isinstance(bench[key], int) or bench[key] < 1:
            raise ConfigError(f"bench.{key}={bench[key]!r}: give a whole number of batches of at least 1.")


def _wanted_stages(bench: DictConfig) -> set[str]:
    """``bench.stages`` (null: every stage but the compiled ceiling, which bench.compile adds)."""
    if bench.get("stages") is None:
        return set(STAGES) - {"ceiling_compiled"}
    unknown = sorted(set(bench.stages) - set(STAGES))
    if unknown or not bench.stages:
        names = ", ".join(name for name in STAGES if name != "ceiling_compiled")
        raise ConfigError(f"bench.stages={list(bench.stages)}: give a non-empty list of {names} (or null for all).")
    return set(bench.stages)


def run_bench(cfg: DictConfig, command: str | None = None) -> dict[str, Any]:
    """Time every stage for the composed config; write ``bench.json`` into the run folder and return it."""
    bench = cfg.bench
    _check(bench)
    warmup, steps = bench.warmup_steps, bench.steps
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    model = build_model(cfg, datamodule)
    fit_timer = ThroughputTimer(warmup, steps)
    fit = _trainer(cfg, fit_timer, log=True, max_steps=warmup + steps, max_epochs=-1, limit_val_batches=0)
    device, precision = fit.strategy.root_device, fit.precision  # the ceiling runs where and how the loop runs
    batch_size = datamodule.batch_size

    wanted = _wanted_stages(bench)
    stages: dict[str, Throughput] = {}
    if "ceiling" in wanted:
        stages["ceiling"] = measure_ceiling(model, batch_size, device, precision, warmup, steps)
    if "loader" in wanted:
        stages["loader"] = measure_loader(datamodule.train_dataloader(), warmup, steps)
    if "loop" in wanted:
        stages["loop"] = _timed(fit, fit_timer, lambda: fit.fit(model, datamodule=datamodule))
    val_loader = datamodule.val_dataloader()
    eval_steps = _eval_steps(val_loader, warmup, bench.eval_steps) if {"validation", "prediction"} & wanted else None
    if "validation" in wanted:
        val_timer = ThroughputTimer(warmup, eval_steps)
        val = _trainer(cfg, val_timer, limit_val_batches=warmup + eval_steps)
        stages["validation"] = _timed(
            val, val_timer, lambda: val.validate(model, dataloaders=val_loader, verbose=False)
        )
    if "prediction" in wanted:
        predict_timer = ThroughputTimer(warmup, eval_steps)
        predict = _trainer(cfg, predict_timer, limit_predict_batches=warmup + eval_steps)
        stages["prediction"] = _timed(
            predict, predict_timer, lambda: predict.predict(model, dataloaders=val_loader, return_predictions=False)
        )
    side = resolve_side(cfg)
    originals = OmegaConf.to_container(bench.originals, resolve=True)
    if "prepare" in wanted:
        folder = Path(cfg.paths.cache_dir) / "bench"
        stages["prepare"] = measure_prepare(originals, folder, side, cfg.prepare.workers, cfg.prepare.quality)
    if bench.compile:
        compiled = build_model(cfg, datamodule)
        compiled.net.compile()
        stages["ceiling_compiled"] = measure_ceiling(compiled, batch_size, device, precision, warmup, steps)

    ceiling = stages["ceiling"].images_per_second if "ceiling" in stages else None
    peaks = [stage.peak_gpu_memory_mib for stage in stages.values() if stage.peak_gpu_memory_mib is not None]
    report = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "setup": {
            "backbone": cfg.backbone.name,
            "input_size": list(model.preprocessing.input_size),
            "batch_size": batch_size,
            "eval_batch_size": datamodule.eval_batch_size,
            "optimizer": cfg.optimizer.name,
            "precision": precision,
            "channels_last": bool(cfg.model.channels_last),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu_cores": available_cores(),
            "num_workers": datamodule.num_workers,
            "pin_memory": datamodule.pin_memory,
            "persistent_workers": datamodule.persistent_workers,
            "warmup_steps": warmup,
            "steps": steps,
            "eval_steps": eval_steps,
            "prepare_side": side,
            "prepare_workers": cfg.prepare.workers or available_cores(),
            "originals": originals,
            "data": {"name": cfg.data.name, **datamodule.summary()},
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "timm": timm.__version__,
                "pytorch_lightning": pl.__version__,
            },
        },
        "stages": {name: stage.to_dict() for name, stage in stages.items()},
        "loop_to_ceiling": stages["loop"].images_per_second / ceiling if ceiling and "loop" in stages else None,
        "compile_gain": stages["ceiling_compiled"].images_per_second / ceiling if bench.compile and ceiling else None,
        "peak_gpu_memory_mib": max(peaks, default=None),
    }
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "bench.json", report)
    return report


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The stages as a table, then the loop/ceiling ratio (and torch.compile's gain when measured)."""
    console = console or Console()
    setup = report["setup"]
    height, width = setup["input_size"]
    device = " ".join(str(part) for part in (setup["device"], setup["device_name"]) if part)
    table = Table(
        title=f"{setup['backbone']} {height}x{width}, batch {setup['batch_size']}, {device}, {setup['precision']}, "
        f"loader workers {setup['num_workers']}, CPU cores {setup['cpu_cores']}"
    )
    for column in ("stage", "images/s", "images", "seconds", "peak GPU MiB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, label in STAGES.items():
        stage = report["stages"].get(name)
        if stage is None:
            continue
        peak = stage["peak_gpu_memory_mib"]
        table.add_row(
            label,
            f"{stage['images_per_second']:,.1f}",
            f"{stage['images']:,}",
            f"{stage['seconds']:.2f}",
            "-" if peak is None else f"{peak:,.0f}",
        )
    console.print(table)
    if report["loop_to_ceiling"] is not None:
        console.print(f"training loop / model ceiling: {report['loop_to_ceiling']:.3f}")
    if report["compile_gain"] is not None:
        console.print(f"torch.compile / eager ceiling: {report['compile_gain']:.3f}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
@friendly_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, "bench")
    command = " ".join(["python -m melanoma_lit.bench", *HydraConfig.get().overrides.task])
    print_report(run_bench(cfg, command=command))


if __name__ == "__main__":
    run(main, "bench")
