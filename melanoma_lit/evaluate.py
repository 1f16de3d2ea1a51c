"""python -m melanoma_lit.evaluate ckpt=PATH [data=...] [data.test=...]: score checkpoints on a labelled set."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.build import DataSpec, build_splits, load_test
from melanoma_lit.data.datamodule import default_workers
from melanoma_lit.data.table import known_mask, targets
from melanoma_lit.errors import DataError
from melanoma_lit.inference.predictions import (
    check_format,
    check_label_sets,
    default_format,
    ensemble_probabilities,
    load_models,
    resolve_checkpoints,
    resolve_device,
    submission_table,
    write_submission,
)
from melanoma_lit.metrics.challenges import class_probabilities
from melanoma_lit.metrics.isic import compute_metrics, confusion_matrix
from melanoma_lit.metrics.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves
from melanoma_lit.runs.checks import check_config, check_paths
from melanoma_lit.runs.files import write_metrics

log = logging.getLogger(__name__)


def evaluation_set(spec: DataSpec) -> tuple[pd.DataFrame, str, str | None]:
    """The images to score: ``data.test`` when set, else the validation fold.

    Returns the table, the metric prefix (``test``/``val``) and the reader name of its source (for the
    submission format), None where the fold mixes several sources.
    """
    if spec.test is not None:
        return load_test(spec), "test", spec.test_sets[spec.test].name
    val = build_splits(spec).val
    if not len(val):
        raise DataError(
            f"data.fold={spec.fold} leaves no validation images in {spec.name}: set data.test=<one of "
            f"{sorted(spec.test_sets)}> or a numbered data.fold to evaluate on."
        )
    names = {source.name for source in spec.sources}
    return val, "val", names.pop() if len(names) == 1 else None


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Predict the evaluation set with the (ensembled) checkpoints, write metrics, plots and a submission CSV."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec = DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True))
    checkpoints = resolve_checkpoints(cfg.ckpt)
    models = load_models(checkpoints, resolve_device(cfg.device))
    check_label_sets(models[0].classes, spec.classes, f"data={spec.name}")
    table, prefix, source = evaluation_set(spec)
    where = f"data.test={spec.test}" if prefix == "test" else f"fold {spec.fold} of data={spec.name}"
    classes = list(spec.classes)
    fmt = default_format(classes, source) if cfg.format == "auto" else cfg.format
    check_format(fmt, classes)
    predictions = ensemble_probabilities(
        models,
        table["path"].tolist(),
        tta=cfg.get("tta"),
        batch_size=cfg.data.get("eval_batch_size") or cfg.data.batch_size,
        num_workers=default_workers() if cfg.data.num_workers is None else cfg.data.num_workers,
        metadata=table,
    )
    if len(predictions.errors):
        shown = "; ".join(f"{row.path}: {row.reason}" for row in predictions.errors.head(3).itertuples())
        raise DataError(
            f"{len(predictions.errors)} of {len(table)} images of {where} cannot be read ({shown}). "
            "Re-download them, or set data.allow_missing=true for missing files."
        )
    probs = class_probabilities(predictions.probs, models[0].classes, classes)
    truth, known = targets(table, classes), known_mask(table, classes)
    values = compute_metrics(probs, truth, known, classes, challenges=spec.challenges)
    metrics = {f"{prefix}/{key}": value for key, value in values.items()}

    csv = write_submission(output_dir / "predictions.csv", submission_table(table["image_id"], probs, classes, fmt))
    plot_roc_curves(probs, truth, known, classes, output_dir / "roc.png")
    plot_confusion_matrix(confusion_matrix(probs, truth, known), classes, output_dir / "confusion_matrix.png")
    plot_reliability(probs, truth, known, classes, output_dir / "reliability.png")
    write_metrics(
        output_dir,
        metrics,
        evaluated_on=where,
        images=len(table),
        checkpoints=[str(path) for path in checkpoints],
        tta=cfg.get("tta"),
        temperature={
            str(path): dict(zip(m.classes, m.temperature.tolist(), strict=True))
            for path, m in zip(checkpoints, models, strict=True)
        },
        predictions={"path": csv.name, "format": fmt},
    )
    log.info("%s: macro AUC %.4f over %d images (%s)", where, metrics[f"{prefix}/auc_macro"], len(table), output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    check_config(cfg, "evaluate")
    check_paths(cfg, ["paths.output_dir"])
    metrics = evaluate(cfg)
    return next((value for key, value in metrics.items() if key.endswith("/auc_macro")), None)


if __name__ == "__main__":
    run(main, "evaluate")
