"""The sweep report: cross-validation summary, out-of-fold metrics, ensembles, plots and the fate of every job.

``write_report(MULTIRUN_DIR)`` writes ``report.md``, ``report.html``, ``report.json`` (every number, for scripts),
the PNGs and each configuration's stacked out-of-fold predictions (``oof_<configuration>.csv``) into
``MULTIRUN_DIR/report/``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from melanoma_lit.analysis.cv import (
    SUMMARY_METRICS,
    VAL_PREFIX,
    MeanStd,
    fold_check,
    group_jobs,
    summarise,
    varying_keys,
)
from melanoma_lit.analysis.jobs import COMPLETED, FOLD_KEY, MISSING, UNFINISHED, Job, Sweep, load_sweep, override_map
from melanoma_lit.analysis.plots import plot_comparison
from melanoma_lit.analysis.predictions import (
    TEST_PREDICTIONS,
    LabelSource,
    Predictions,
    mean_ensemble,
    out_of_fold,
    read_predictions,
)
from melanoma_lit.analysis.render import Block, Code, Heading, Image, Paragraph, to_html, to_markdown
from melanoma_lit.data.atomic import replaced
from melanoma_lit.errors import MelanomaLitError
from melanoma_lit.metrics.isic import confusion_matrix
from melanoma_lit.metrics.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves

log = logging.getLogger(__name__)

REPORT_DIR = "report"
ENSEMBLE_LABEL = "ensemble of all configurations"
MAX_PLOTTED = 6  # configurations drawn (the best by the monitored metric); an Optuna study has one per trial


@dataclass
class ReportFiles:
    dir: Path
    markdown: Path
    html: Path
    json: Path
    images: list[Path] = field(default_factory=list)


@dataclass
class _Analysis:
    sweep: Sweep
    groups: dict[str, list[Job]]
    metrics: dict[str, str]  # compute_metrics key -> title
    summaries: dict[str, dict[str, MeanStd]]
    oof: dict[str, Predictions]  # configuration (and ENSEMBLE_LABEL) -> stacked out-of-fold predictions
    test: dict[str, Predictions]  # configuration (and ENSEMBLE_LABEL) -> mean test probabilities over its folds
    folds: dict[str, Any]
    notes: list[str]
    plotted: list[str]  # configurations with plots, in job order
    oof_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    test_scores: dict[str, dict[str, float]] = field(default_factory=dict)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Analyse a multirun folder and write the report (default ``<sweep_dir>/report/``)."""
    sweep = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep.dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    analysis = _analyse(sweep)
    files = ReportFiles(dir=out, markdown=out / "report.md", html=out / "report.html", json=out / "report.json")
    blocks = _blocks(analysis, out, files)
    title = f"Sweep report: {sweep.dir.name}"
    contents = {
        files.markdown: to_markdown([Heading(title, 1), *blocks]),
        files.html: to_html([Heading(title, 1), *blocks], title),
        files.json: json.dumps(_clean(_as_json(analysis, files)), indent=2, allow_nan=False),
    }
    for path, text in contents.items():  # a report rewritten while a reader has it open is never half a file
        with replaced(path) as partial:
            partial.write_text(text)
    return files


def _analyse(sweep: Sweep) -> _Analysis:
    groups = group_jobs(sweep.jobs)
    metrics = dict(SUMMARY_METRICS)
    monitor = (sweep.monitor or "").removeprefix(VAL_PREFIX)
    if monitor and monitor not in metrics:
        metrics[monitor] = monitor
    labels, notes = LabelSource(), []
    oof, test_parts = {}, {}
    for label, jobs in groups.items():
        completed = [job for job in jobs if job.completed]
        if not completed:
            continue
        try:
            oof[label] = out_of_fold(completed, labels)
        except MelanomaLitError as error:
            notes.append(f"No out-of-fold metrics for {label}: {error}")
        with_test = [job for job in completed if job.dir and (job.dir / TEST_PREDICTIONS).exists()]
        if with_test:
            try:
                test_parts[label] = mean_ensemble([read_predictions(j, TEST_PREDICTIONS, labels) for j in with_test])
            except MelanomaLitError as error:
                notes.append(f"No test-set ensemble for {label}: {error}")
    # Mean probability of every configuration per image: what combining the backbones adds.
    for sets in (oof, test_parts):
        if len(sets) > 1:
            sets[ENSEMBLE_LABEL] = mean_ensemble(list(sets.values()))
    summaries = {label: summarise(jobs, list(metrics)) for label, jobs in groups.items()}
    return _Analysis(
        sweep=sweep,
        groups=groups,
        metrics=metrics,
        summaries=summaries,
        oof=oof,
        test=test_parts,
        folds=fold_check(groups),
        notes=notes,
        plotted=_best(summaries, monitor or "auc_macro", OmegaConf.select(sweep.config, "monitor_mode") != "min"),
        oof_scores={label: predictions.metrics() for label, predictions in oof.items()},
        test_scores={label: predictions.metrics() for label, predictions in test_parts.items()},
    )


def _best(summaries: dict[str, dict[str, MeanStd]], metric: str, higher_is_better: bool) -> list[str]:
    """Up to MAX_PLOTTED configurations with a value of ``metric``, the best by its mean over folds."""
    scored = [label for label, summary in summaries.items() if summary[metric].n]
    ranked = sorted(scored, key=lambda label: summaries[label][metric].mean, reverse=higher_is_better)
    return [label for label in scored if label in ranked[:MAX_PLOTTED]]


def _blocks(analysis: _Analysis, out: Path, files: ReportFiles) -> list[Block]:
    sweep = analysis.sweep
    counts = sweep.counts()
    blocks: list[Block] = [
        Paragraph(
            f"Folder {sweep.dir.resolve()}; sweeper {sweep.sweeper}, launcher {sweep.launcher}; "
            f"overrides: {' '.join(sweep.overrides) or '(none recorded)'}."
        ),
        Paragraph(
            f"Jobs: {counts['expected']} expected, {counts['completed']} completed, {counts['failed']} failed, "
            f"{counts['unfinished']} unfinished, {counts['missing']} missing"
            + (f", {counts['no metrics']} without validation metrics" if counts["no metrics"] else "")
            + "."
        ),
    ]
    blocks += _summary_blocks(analysis, out, files)
    blocks += _oof_blocks(analysis, out, files)
    blocks += _calibration_blocks(analysis)
    blocks += _test_blocks(analysis)
    blocks += _fold_blocks(analysis.folds)
    if sweep.optuna and "best_value" in sweep.optuna:
        params = " ".join(f"{key}={value}" for key, value in sweep.optuna["best_params"].items())
        best = f"Best value {sweep.optuna['best_value']:.4f} ({sweep.monitor}) with {params}."
        blocks += [Heading("Optuna"), Paragraph(best)]
    blocks += _job_blocks(analysis)
    if analysis.notes:
        blocks += [Heading("Notes"), *[Paragraph(note) for note in analysis.notes]]
    return blocks


def _summary_blocks(analysis: _Analysis, out: Path, files: ReportFiles) -> list[Block]:
    rows = []
    for label, jobs in analysis.groups.items():
        done = sum(job.completed for job in jobs)
        rows.append([label, f"{done}/{len(jobs)}", *[str(analysis.summaries[label][m]) for m in analysis.metrics]])
    blocks: list[Block] = [
        Heading("Cross-validation: mean ± std over folds"),
        Paragraph(
            "Final validation metrics of each job's best checkpoint (metrics.json), averaged over the completed "
            "folds of each configuration; ± is the sample standard deviation (ddof=1)."
        ),
        pd.DataFrame(rows, columns=["configuration", "folds completed", *analysis.metrics.values()]),
    ]
    if analysis.plotted:
        groups = {label: analysis.groups[label] for label in analysis.plotted}
        path = plot_comparison(groups, analysis.summaries, analysis.metrics, out / "comparison.png")
        files.images.append(path)
        if len(analysis.plotted) < len(analysis.groups):
            blocks.append(Paragraph(f"Plots show the {len(analysis.plotted)} best configurations by the monitor."))
        blocks.append(Image(path.name, "configurations compared"))
    return blocks


def _oof_blocks(analysis: _Analysis, out: Path, files: ReportFiles) -> list[Block]:
    if not analysis.oof:
        return [Heading("Out-of-fold metrics"), Paragraph("No completed job with validation predictions.")]
    rows, figures = [], []
    for label, predictions in analysis.oof.items():
        scores = analysis.oof_scores[label]
        folds = ", ".join(map(str, _folds(predictions)))
        rows.append([label, str(len(predictions)), folds, *[_number(scores[m]) for m in analysis.metrics]])
        slug = _slug(label)
        with replaced(out / f"oof_{slug}.csv") as partial:
            predictions.frame.to_csv(partial, index=False, float_format="%.6f")
        if label not in (*analysis.plotted, ENSEMBLE_LABEL):
            continue
        probs, targets, known = predictions.arrays()
        roc = plot_roc_curves(probs, targets, known, predictions.classes, out / f"roc_{slug}.png")
        matrix = confusion_matrix(probs, targets, known)
        confusion = plot_confusion_matrix(matrix, predictions.classes, out / f"confusion_{slug}.png")
        reliability = plot_reliability(probs, targets, known, predictions.classes, out / f"reliability_{slug}.png")
        files.images += [roc, confusion, reliability]
        figures += [
            Heading(label, 3),
            Image(roc.name, f"ROC {label}"),
            Image(confusion.name, f"confusion {label}"),
            Image(reliability.name, f"reliability {label}"),
        ]
    return [
        Heading("Out-of-fold metrics"),
        Paragraph(
            "Each configuration's validation predictions over all its folds, stacked (every image scored once, by "
            "the model that did not train on it) and scored as one set; the ensemble averages the configurations' "
            "probabilities per image. Stacked predictions: oof_<configuration>.csv."
        ),
        pd.DataFrame(rows, columns=["configuration", "images", "folds", *analysis.metrics.values()]),
        *figures,
    ]


def _calibration_blocks(analysis: _Analysis) -> list[Block]:
    """Per-class ECE: mean ± std over each configuration's folds, and of its stacked out-of-fold predictions."""
    classes = next((p.classes for p in analysis.oof.values()), None)
    if classes is None:
        return []
    keys = [f"ece/{cls}" for cls in classes] + ["ece_macro"]
    rows = []
    for label, jobs in analysis.groups.items():
        summary = summarise(jobs, keys)
        rows.append([label, "folds", *[str(summary[key]) for key in keys]])
        if label in analysis.oof_scores:
            rows.append([label, "out-of-fold", *[_number(analysis.oof_scores[label][key]) for key in keys]])
    if ENSEMBLE_LABEL in analysis.oof_scores:
        rows.append([ENSEMBLE_LABEL, "out-of-fold", *[_number(analysis.oof_scores[ENSEMBLE_LABEL][k]) for k in keys]])
    return [
        Heading("Calibration: expected calibration error"),
        Paragraph(
            "ECE of each class over its known labels: 15 equal-width probability bins, L1 (torchmetrics' "
            "BinaryCalibrationError); lower is better. 'folds': mean ± std over the completed folds (metrics.json); "
            "'out-of-fold': the stacked predictions scored as one set. Reliability diagrams: reliability_*.png."
        ),
        pd.DataFrame(rows, columns=["configuration", "over", *classes, "macro"]),
    ]


def _test_blocks(analysis: _Analysis) -> list[Block]:
    heading = Heading("Held-out test set: fold and backbone ensembles")
    if not analysis.test:
        configured = OmegaConf.select(analysis.sweep.config, "data.test", default=None)
        reason = (
            f"data.test={configured} is configured but no job wrote {TEST_PREDICTIONS}."
            if configured
            else "No held-out test set configured (data.test is null)."
        )
        return [heading, Paragraph(reason)]
    rows = []
    for label, predictions in analysis.test.items():
        scores = analysis.test_scores[label]
        rows.append([label, str(len(predictions)), *[_number(scores[m]) for m in analysis.metrics]])
    return [
        heading,
        Paragraph(
            "Mean test-set probability of each configuration's fold models (fold ensemble), and of all "
            "configurations' fold ensembles (backbone ensemble)."
        ),
        pd.DataFrame(rows, columns=["ensemble", "images", *analysis.metrics.values()]),
    ]


def _fold_blocks(folds: dict[str, Any]) -> list[Block]:
    files = folds["folds_files"]
    lines = [
        f"Fold files named by the completed jobs: {', '.join(files) or 'none'}"
        + (" (one split shared by every job)." if folds["shared"] else "."),
        f"Every job validated only on images of its own fold in that file: {_yes_no(folds['matches_file'])}.",
        f"Per fold, every configuration validated on the same images: {_yes_no(folds['identical_across_groups'])}.",
    ]
    return [Heading("Folds"), *[Paragraph(line) for line in lines]]


def _job_blocks(analysis: _Analysis) -> list[Block]:
    jobs, sweep_dir = analysis.sweep.jobs, analysis.sweep.dir
    varying = varying_keys([job for job in jobs if job.overrides]) or [FOLD_KEY]
    monitor = analysis.sweep.monitor or VAL_PREFIX + "auc_macro"
    group_of = {job.num: label for label, members in analysis.groups.items() for job in members}
    rows = []
    for job in jobs:
        rows.append(
            [
                str(job.num),
                _shown(job, varying),
                job.status,
                _number(job.metrics.get(monitor, math.nan)) if job.completed else "",
                "" if job.seconds is None else f"{job.seconds:.0f}",
                group_of.get(job.num, ""),
                str(job.dir.relative_to(sweep_dir)) if job.dir else "",
            ]
        )
    blocks: list[Block] = [
        Heading("Jobs"),
        pd.DataFrame(rows, columns=["job", "overrides", "status", monitor, "seconds", "configuration", "folder"]),
    ]
    problems = [job for job in jobs if job.status != COMPLETED]
    if problems:
        blocks += [
            Heading("Failed, unfinished and missing jobs"),
            pd.DataFrame(
                [[str(j.num), _shown(j, varying), j.status, _problem(j)] for j in problems],
                columns=["job", "overrides", "status", "error"],
            ),
        ]
        blocks += [Code(f"job {j.num} traceback", j.traceback) for j in problems if j.traceback]
    return blocks


def _as_json(analysis: _Analysis, files: ReportFiles) -> dict[str, Any]:
    sweep = analysis.sweep
    group_of = {job.num: label for label, members in analysis.groups.items() for job in members}
    oof = {
        label: {"images": len(p), "folds": _folds(p), "metrics": analysis.oof_scores[label]}
        for label, p in analysis.oof.items()
    }
    return {
        "sweep_dir": str(sweep.dir.resolve()),
        "sweeper": sweep.sweeper,
        "launcher": sweep.launcher,
        "overrides": sweep.overrides,
        "monitor": sweep.monitor,
        "counts": sweep.counts(),
        "jobs": [
            {
                "num": job.num,
                "status": job.status,
                "overrides": job.overrides,
                "configuration": group_of.get(job.num),
                "dir": str(job.dir) if job.dir else None,
                "backbone": job.backbone,
                "fold": job.fold,
                "seconds": job.seconds,
                "error": job.error,
                "metrics": job.metrics,
            }
            for job in sweep.jobs
        ],
        "configurations": {
            label: {
                "jobs": [job.num for job in jobs],
                "summary": {m: vars(v) for m, v in analysis.summaries[label].items()},
                "oof": oof.get(label),
            }
            for label, jobs in analysis.groups.items()
        },
        "oof_ensemble": oof.get(ENSEMBLE_LABEL),
        "test": {
            label: {"images": len(p), "metrics": analysis.test_scores[label]} for label, p in analysis.test.items()
        },
        "folds": analysis.folds,
        "optuna": sweep.optuna,
        "notes": analysis.notes,
        "files": {"markdown": files.markdown.name, "html": files.html.name, "images": [p.name for p in files.images]},
    }


def _shown(job: Job, keys: list[str]) -> str:
    """The job's values of the overrides that vary across the sweep."""
    given = override_map(job.overrides)
    return " ".join(f"{key}={given[key]}" for key in keys if key in given) or " ".join(job.overrides)


def _folds(predictions: Predictions) -> list[Any]:
    return sorted(predictions.frame["fold"].unique().tolist()) if "fold" in predictions.frame else []


def _problem(job: Job) -> str:
    """One line: the exception, the last log line of an unfinished job, or why there is none."""
    if job.error:
        lines = job.error.strip().splitlines()
        return lines[-1] if job.status == UNFINISHED else lines[0]
    return "never started" if job.status == MISSING else "no error recorded"


def _number(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _yes_no(value: bool | None) -> str:
    return "not checked" if value is None else ("yes" if value else "NO")


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "all"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
