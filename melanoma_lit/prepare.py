"""python -m melanoma_lit.prepare [overrides]: fill the resize cache for the configured data and backbone."""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.build import DataSpec, load_pool, load_test
from melanoma_lit.data.cache import PrepareReport, prepare_cache
from melanoma_lit.data.transforms import Preprocessing
from melanoma_lit.errors import ConfigError
from melanoma_lit.models.backbone import preprocessing_for
from melanoma_lit.runs.checks import check_config
from melanoma_lit.runs.files import write_json

_CORRUPT_SHOWN = 20


def resolve_side(cfg: DictConfig) -> int:
    """``prepare.side``, else the largest decode side of ``prepare.sizes``, else the backbone's decode side."""
    side, sizes = cfg.prepare.get("side"), cfg.prepare.get("sizes")
    if side is not None and sizes:
        raise ConfigError(f"prepare.side={side} and prepare.sizes={list(sizes)}: set one of them, not both.")
    if side is not None:
        return int(side)
    if sizes:
        return max(Preprocessing(input_size=(int(size), int(size))).decode_side for size in sizes)
    return preprocessing_for(cfg.backbone.name, cfg.data.input_size).decode_side


def run_prepare(cfg: DictConfig, progress: bool = True) -> PrepareReport:
    """Cache the training pool and the configured test set; write ``prepare.json`` into the run folder."""
    spec = DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True))
    pool, _ = load_pool(spec)
    table = pd.concat([pool, load_test(spec)], ignore_index=True)
    report = prepare_cache(
        table,
        cfg.paths.cache_dir,
        resolve_side(cfg),
        workers=cfg.prepare.workers,
        quality=cfg.prepare.quality,
        progress=progress,
    )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "prepare.json", report.to_dict())
    return report


def print_report(report: PrepareReport, console: Console | None = None) -> None:
    console = console or Console()
    summary = Table(title="Resize cache", show_header=False)
    for name, value in (
        ("folder", report.folder),
        ("shorter side", f"{report.side} px"),
        ("images", report.total),
        ("written", report.written),
        ("already cached", report.skipped),
        ("corrupt", len(report.corrupt)),
        ("seconds", f"{report.seconds:.1f}"),
        ("images/s", f"{report.images_per_second:.1f}"),
    ):
        summary.add_row(name, str(value))
    console.print(summary)
    for _, reason in report.corrupt[:_CORRUPT_SHOWN]:
        console.print(Text.assemble(("corrupt ", "red"), reason))
    if len(report.corrupt) > _CORRUPT_SHOWN:
        console.print(f"... and {len(report.corrupt) - _CORRUPT_SHOWN} more (all listed in prepare.json)")
    if report.corrupt:
        console.print("Training stops at these files: replace them with good copies, or remove their rows, then rerun.")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
@friendly_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, "prepare")
    print_report(run_prepare(cfg))


if __name__ == "__main__":
    run(main, "prepare")
