"""python -m melanoma_lit.predict ckpt=PATH input=FOLDER_OR_CSV [predictions_file=FILE]: probabilities for new images.

Images that cannot be read do not stop a run: they go to ``<predictions_file stem>.errors.csv`` (columns ``path``,
``reason``), written on every run, empty when every image was read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.datamodule import default_workers
from melanoma_lit.data.sources import IMAGE_SUFFIXES
from melanoma_lit.data.table import META_COLUMNS
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.inference.predictions import (
    check_format,
    default_format,
    ensemble_probabilities,
    load_models,
    resolve_checkpoints,
    resolve_device,
    submission_table,
    write_submission,
)
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.runs.checks import check_config, check_paths

log = logging.getLogger(__name__)

PREDICT_SUFFIXES = frozenset(IMAGE_SUFFIXES | {".bmp", ".tif", ".tiff", ".webp"})
CSV_COLUMNS: tuple[str, ...] = ("path", "image", "image_id")  # what an input CSV may name its images by


def list_inputs(source: str | Path, image_dir: str | Path | None = None) -> pd.DataFrame:
    """The images to predict as columns ``image`` (the output's id) and ``path``.

    A folder: every file with an image suffix below it, hidden files and folders skipped; ``image`` is the
    path relative to the folder without its suffix (the ISIC id for a flat folder of ISIC images).
    A CSV: see ``_from_csv``.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        frame = _from_folder(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        frame = _from_csv(source, Path(image_dir).expanduser() if image_dir else source.parent)
    else:
        raise DataError(f"input={source}: not a folder or a .csv file. Pass a folder of images or a CSV listing them.")
    duplicated = frame["image"][frame["image"].duplicated()]
    if len(duplicated):
        raise DataError(
            f"input={source}: {duplicated.nunique()} image names occur twice (first: {duplicated.iloc[0]}), "
            "e.g. x.jpg beside x.png; rename one, since each output row is named by the image."
        )
    return frame.reset_index(drop=True)


def _from_folder(folder: Path) -> pd.DataFrame:
    files, _ = _walk(folder)
    if not files:
        raise DataError(f"input={folder}: no image files ({', '.join(sorted(PREDICT_SUFFIXES))}) in this folder.")
    return pd.DataFrame(
        {
            "image": [_without_suffix(path.relative_to(folder).as_posix()) for path in files],
            "path": [str(path) for path in files],
        }
    )


def _walk(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Everything below ``folder``, sorted: the image files to predict, and ``(path, reason)`` for each entry that
    is not predicted (another kind of file, a hidden file or folder, a folder that cannot be entered, a broken
    link)."""
    taken: list[Path] = []
    skipped: list[tuple[str, str]] = []

    def cannot_enter(error: OSError) -> None:
        why = "permission denied" if isinstance(error, PermissionError) else (error.strerror or str(error))
        skipped.append((str(error.filename), f"folder not searched: cannot enter it ({why}); fix its permissions"))

    for root, dirs, names in os.walk(folder, onerror=cannot_enter):
        for name in sorted(dirs):
            if name.startswith("."):
                skipped.append((str(Path(root) / name), "hidden folder (name starts with '.'): not searched"))
            elif (Path(root) / name).is_symlink():
                skipped.append((str(Path(root) / name), "a link to a folder: not searched (pass its target as input)"))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) / d).is_symlink())
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith("."):
                skipped.append((str(path), "hidden file (name starts with '.'): not predicted"))
            elif path.suffix.lower() not in PREDICT_SUFFIXES:
                suffixes = ", ".join(sorted(PREDICT_SUFFIXES))
                skipped.append((str(path), f"not an image file by its suffix ({suffixes}): not predicted"))
            elif not path.is_file():
                skipped.append((str(path), "not a regular file (a broken link, a device or a pipe): not predicted"))
            else:
                taken.append(path)
    return sorted(taken), sorted(skipped)


def skipped_inputs(source: str | Path) -> pd.DataFrame:
    """The entries below a folder ``input`` that are not predicted, with the reason (columns ``path``, ``reason``);
    none for a CSV input, whose missing or unreadable files are reported by the prediction itself."""
    source = Path(source).expanduser()
    return pd.DataFrame(_walk(source)[1] if source.is_dir() else [], columns=["path", "reason"])


def _from_csv(csv: Path, image_dir: Path) -> pd.DataFrame:
    """A CSV with a ``path`` column (absolute, or relative to ``image_dir``) and/or an ``image`` or
    ``image_id`` column. With a path, the id column names the output row (else the path without suffix);
    with only an id, the file is ``image_dir/<id>`` with the id's suffix or the first existing image suffix.
    Patient metadata columns (``age``, ``sex``, ``site``) come along for models that fuse them."""
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if not any(column in frame.columns for column in CSV_COLUMNS):
        raise DataError(
            f"input={csv}: no column named {' or '.join(CSV_COLUMNS)} (found {list(frame.columns)}). "
            "List the images in a column 'path' (file paths) or 'image'/'image_id' (file names in image_dir)."
        )
    if frame.empty:
        raise DataError(f"input={csv}: the CSV lists no images.")
    id_column = next((column for column in ("image", "image_id") if column in frame.columns), None)
    if "path" in frame.columns:
        given = frame["path"].str.strip()
        paths = [image_dir / path for path in given]  # an absolute path replaces image_dir
        ids = (frame[id_column].str.strip() if id_column else given).map(_without_suffix)
    else:
        names = frame[id_column].str.strip()
        paths = [_find_image(image_dir / name) for name in names]
        ids = names.map(_without_suffix)
    metadata = {column: frame[column].to_numpy() for column in META_COLUMNS if column in frame.columns}
    return pd.DataFrame({"image": ids.to_numpy(), "path": [str(p) for p in paths], **metadata})


def _without_suffix(name: str) -> str:
    path = Path(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in PREDICT_SUFFIXES else name


def _find_image(stem: Path) -> Path:
    if stem.suffix.lower() in PREDICT_SUFFIXES:
        return stem
    candidates = (stem.with_name(stem.name + suffix) for suffix in sorted(PREDICT_SUFFIXES))
    return next((path for path in candidates if path.is_file()), stem.with_name(stem.name + ".jpg"))


def errors_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".errors.csv")


def _report_metadata(models: Sequence[LesionClassifier], inputs: pd.DataFrame, source: str) -> None:
    """Say which metadata columns the models fuse that ``input`` does not give: every image is unknown for them."""
    fused = {column for model in models if model.metadata_encoder for column in model.metadata_encoder.columns}
    wanted = [column for column in META_COLUMNS if column in fused]
    if not wanted:
        return
    missing = [column for column in wanted if column not in inputs.columns]
    if not missing:
        log.info("patient metadata: %s taken from input=%s", ", ".join(wanted), source)
    elif Path(source).expanduser().is_dir():
        log.warning(
            "patient metadata: the model fuses %s, but input=%s is a folder, which gives none: every image is "
            "'unknown' for each. Pass a CSV with columns path (or image) and %s to use them.",
            ", ".join(wanted),
            source,
            ", ".join(wanted),
        )
    else:
        log.warning(
            "patient metadata: input=%s has no column %s, which the model fuses: every image is 'unknown' for it "
            "(columns it gives: %s). Add the column to the CSV to use it.",
            source,
            " or ".join(missing),
            ", ".join(c for c in wanted if c not in missing) or "none",
        )


def predict(cfg: DictConfig) -> Path:
    """Write one row per readable image with every class probability; returns the predictions file."""
    output = Path(cfg.predictions_file)
    earlier = [path for path in (output, errors_path(output)) if path.exists()]
    if earlier:
        raise ConfigError(
            f"{earlier[0]} already exists: predict never overwrites earlier results. Give another "
            "predictions_file=<file.csv>, or move that file away."
        )
    inputs = list_inputs(cfg.input, cfg.get("image_dir"))
    models = load_models(resolve_checkpoints(cfg.ckpt), resolve_device(cfg.device))
    classes = models[0].classes
    fmt = default_format(classes) if cfg.format == "auto" else cfg.format
    check_format(fmt, classes)
    _report_metadata(models, inputs, cfg.input)
    predictions = ensemble_probabilities(
        models,
        inputs["path"].tolist(),
        tta=cfg.get("tta"),
        batch_size=cfg.batch_size,
        num_workers=default_workers() if cfg.num_workers is None else cfg.num_workers,
        metadata=inputs,
    )
    ok = predictions.ok
    output = write_submission(output, submission_table(inputs["image"][ok], predictions.probs[ok], classes, fmt))
    errors = errors_path(output)
    skipped = skipped_inputs(cfg.input)
    with replaced(errors) as partial:
        pd.concat([predictions.errors, skipped], ignore_index=True).to_csv(partial, index=False)
    log.info("wrote %d predictions (%s format) to %s", int(ok.sum()), fmt, output)
    if len(predictions.errors):
        log.warning("%d images could not be read; listed with the reason in %s", len(predictions.errors), errors)
    if len(skipped):
        log.warning("%d entries under input are not images and were not predicted; listed in %s", len(skipped), errors)
    return output


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@friendly_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, "predict")
    check_paths(cfg, ["paths.output_dir", "predictions_file"])  # before any image is read
    predict(cfg)


if __name__ == "__main__":
    run(main, "predict")
