"""python -m melanoma_lit.predict ckpt=PATH input=FOLDER_OR_CSV [predictions_file=FILE]: probabilities for new images.

Images that cannot be read do not stop a run: they go to ``<predictions_file stem>.errors.csv`` (columns ``path``,
``reason``), written on every run, empty when every image was read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.data.datamodule import default_workers
from melanoma_lit.data.sources import IMAGE_SUFFIXES
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
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in PREDICT_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise DataError(f"input={folder}: no image files ({', '.join(sorted(PREDICT_SUFFIXES))}) in this folder.")
    return pd.DataFrame(
        {
            "image": [_without_suffix(path.relative_to(folder).as_posix()) for path in files],
            "path": [str(path) for path in files],
        }
    )


def _from_csv(csv: Path, image_dir: Path) -> pd.DataFrame:
    """A CSV with a ``path`` column (absolute, or relative to ``image_dir``) and/or an ``image`` or
    ``image_id`` column. With a path, the id column names the output row (else the path without suffix);
    with only an id, the file is ``image_dir/<id>`` with the id's suffix or the first existing image suffix."""
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
    return pd.DataFrame({"image": ids.to_numpy(), "path": [str(p) for p in paths]})


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
    predictions = ensemble_probabilities(
        models,
        inputs["path"].tolist(),
        tta=cfg.get("tta"),
        batch_size=cfg.batch_size,
        num_workers=default_workers() if cfg.num_workers is None else cfg.num_workers,
    )
    ok = predictions.ok
    output = write_submission(output, submission_table(inputs["image"][ok], predictions.probs[ok], classes, fmt))
    errors = errors_path(output)
    predictions.errors.to_csv(errors, index=False)
    log.info("wrote %d predictions (%s format) to %s", int(ok.sum()), fmt, output)
    if len(predictions.errors):
        log.warning("%d images could not be read; listed with the reason in %s", len(predictions.errors), errors)
    return output


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@friendly_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, "predict")
    check_paths(cfg, ["predictions_file"])
    predict(cfg)


if __name__ == "__main__":
    run(main, "predict")
