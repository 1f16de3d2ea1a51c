"""Inference shared by train, evaluate and predict: checkpoints in, probability tables out."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from melanoma_lit.data.atomic import replaced
from melanoma_lit.data.images import load_rgb
from melanoma_lit.data.transforms import Preprocessing, eval_transform
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.metrics.challenges import CHALLENGES, challenge_probabilities, missing_classes
from melanoma_lit.models.module import LesionClassifier

log = logging.getLogger(__name__)

CHECKPOINT_NAMES: tuple[str, ...] = ("best.ckpt", "last.ckpt")  # a run's checkpoint, in order of preference
# A year's submission layout is its challenge's (metrics.challenges): the columns the official scorer reads.
FORMAT_CHALLENGES: dict[str, str] = {
    "isic2017": "isic2017_part3",
    "isic2018": "isic2018_task3",
    "isic2019": "isic2019_task1",
    "isic2020": "isic2020",
}
SUBMISSION_FORMATS: tuple[str, ...] = (*FORMAT_CHALLENGES, "generic")


def predict_table(
    trainer: pl.Trainer, model: LesionClassifier, loader: torch.utils.data.DataLoader, ckpt_path: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities, the logits before the temperature (identity view) and the dataset rows they belong
    to, in row order.

    All rows unless the trainer limits prediction batches (``trainer.limit_predict_batches``).
    """
    batches = trainer.predict(model, dataloaders=loader, ckpt_path=ckpt_path)
    parts = [torch.cat([b[key] for b in batches]).numpy() for key in ("probs", "logits", "index")]
    if trainer.world_size > 1:
        parts = _from_every_rank(parts)
    probs, logits, rows = parts
    rows, first = np.unique(rows, return_index=True)  # sorted; DDP's sampler repeats rows to even out the ranks
    return probs[first], logits[first], rows


def _from_every_rank(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Under DDP each rank predicted its share of the rows: every rank gets all of them."""
    import torch.distributed as dist

    shares: list[list[np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, parts)
    return [np.concatenate([share[i] for share in shares]) for i in range(len(parts))]


def write_predictions(path: Path, table: pd.DataFrame, probs: np.ndarray, classes: list[str], **extra: Any) -> None:
    """One row per image with one probability column per class, named as ISIC names them."""
    frame = submission_table(table["image_id"], probs, classes, "generic")
    for key, value in extra.items():
        frame[key] = value
    with replaced(path) as partial:
        frame.to_csv(partial, index=False, float_format="%.6f")


# --- checkpoints -------------------------------------------------------------------------------------------


def resolve_checkpoints(ckpt: str | Path | Sequence[str | Path]) -> list[Path]:
    """The checkpoints named by ``ckpt``: a ``.ckpt`` file; a run dir (its ``checkpoints/best.ckpt``, else
    ``last.ckpt``); a multirun or any folder of run dirs (every run's, for an ensemble); or a list of these."""
    if isinstance(ckpt, str | Path):
        ckpt = [ckpt]
    found: list[Path] = []
    for item in ckpt:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise ConfigError(f"ckpt={item}: no such file or folder. Pass a .ckpt file, a run dir or a multirun dir.")
        runs = sorted({folder.parent for folder in path.rglob("checkpoints") if folder.is_dir()})
        chosen = [_run_checkpoint(run) for run in runs]
        chosen = [c for c in chosen if c is not None]
        if not chosen:
            raise ConfigError(
                f"ckpt={item}: no checkpoints/best.ckpt or checkpoints/last.ckpt under this folder. "
                "Pass a .ckpt file, or the output folder of a finished training run."
            )
        found.extend(chosen)
    return found


def _run_checkpoint(run: Path) -> Path | None:
    return next((run / "checkpoints" / n for n in CHECKPOINT_NAMES if (run / "checkpoints" / n).is_file()), None)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA device is visible; use device=cpu or device=auto.")
    return torch.device(name)


def load_models(paths: Sequence[Path], device: torch.device) -> list[LesionClassifier]:
    """Models in eval mode on ``device``; an ensemble must share one class list (same names, same order)."""
    models = []
    for path in paths:
        model = LesionClassifier.from_checkpoint(path, map_location=device).to(device).eval()
        if models and model.classes != models[0].classes:
            raise ConfigError(
                f"{path} predicts {model.classes} but {paths[0]} predicts {models[0].classes}: "
                "an ensemble needs checkpoints trained on one label set; pass checkpoints of one data config."
            )
        models.append(model)
    log.info("loaded %d checkpoint(s): %s", len(models), ", ".join(str(p) for p in paths))
    return models


def check_label_sets(model_classes: Sequence[str], data_classes: Sequence[str], where: str) -> None:
    """Fail before inference when the model's outputs cannot give every class the data is labelled with (a
    union such as AKIEC may come from all its parts, a subtype such as SK from its parent)."""
    missing = missing_classes(data_classes, model_classes)
    if missing:
        raise ConfigError(
            f"the checkpoint predicts {list(model_classes)} but {where} is labelled {list(data_classes)}: it has "
            f"no output for {missing}. Evaluate on a data config whose label set the model covers (data=... or "
            "data.classes=...)."
        )


# --- images that may fail to decode --------------------------------------------------------------------------


class ImageFiles(Dataset):
    """Image files for inference; an unreadable file becomes a failure record instead of an exception."""

    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing) -> None:
        self.paths = np.asarray([str(p) for p in paths], dtype=str)
        self.transform = eval_transform(preprocessing)
        self.decode_side = preprocessing.decode_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = str(self.paths[index])
        try:
            image = load_rgb(path, min_side=self.decode_side)
        except DataError as error:
            return {"index": index, "path": path, "error": str(error)}
        return {"index": index, "image": self.transform(image=image)["image"]}


def collate_skipping_failures(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decoded images; failures travel beside them as (index, path, reason)."""
    good = [item for item in items if "image" in item]
    return {
        "image": torch.stack([item["image"] for item in good]) if good else torch.empty(0, dtype=torch.uint8),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "failures": [(item["index"], item["path"], item["error"]) for item in items if "error" in item],
    }


@dataclass
class Predictions:
    """Probabilities ``[N, K]`` in input order, which rows were read (``ok``; NaN rows elsewhere), the failures."""

    probs: np.ndarray
    ok: np.ndarray
    errors: pd.DataFrame  # columns: path, reason


def ensemble_probabilities(
    models: Sequence[LesionClassifier],
    paths: Sequence[str],
    tta: int | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | None = None,
    metadata: pd.DataFrame | None = None,
) -> Predictions:
    """Mean probability of ``models`` for every image; each distinct preprocessing decodes the images once.

    ``tta`` overrides each model's own number of dihedral views. Columns follow ``models[0].classes``.
    ``metadata``: one row per path with the patient metadata columns (table.META_COLUMNS) that models fusing
    metadata read, each through its own encoder; a column it lacks (or no table) is "unknown" for every image.
    """
    device = device or models[0].device
    rows = metadata if metadata is not None else pd.DataFrame(index=range(len(paths)))
    encoded = {id(m): torch.from_numpy(m.metadata_encoder.encode(rows)) for m in models if m.metadata_encoder}
    n_classes = len(models[0].classes)
    total = np.zeros((len(paths), n_classes), dtype=np.float64)
    failed: dict[int, tuple[str, str]] = {}
    groups: dict[Preprocessing, list[LesionClassifier]] = defaultdict(list)
    for model in models:
        groups[model.preprocessing].append(model)
    with _progress() as progress:
        for preprocessing, members in groups.items():
            loader = DataLoader(
                ImageFiles(paths, preprocessing),
                batch_size=batch_size,
                num_workers=num_workers,
                collate_fn=collate_skipping_failures,
                pin_memory=device.type == "cuda",
            )
            task = progress.add_task(f"{len(members)} model(s) at {preprocessing.input_size}", total=len(loader))
            for batch in loader:
                for index, path, reason in batch["failures"]:
                    failed[index] = (path, reason)
                if len(batch["index"]):
                    images = batch["image"].to(device, non_blocking=True)
                    with torch.inference_mode():
                        for model in members:
                            meta = encoded[id(model)][batch["index"]].to(device) if id(model) in encoded else None
                            probs = model.predict_proba(images, tta, metadata=meta)
                            total[batch["index"].numpy()] += probs.double().cpu().numpy()
                progress.advance(task)
    probs = total / len(models)
    ok = np.ones(len(paths), dtype=bool)
    ok[list(failed)] = False
    probs[~ok] = np.nan
    errors = pd.DataFrame([failed[i] for i in sorted(failed)], columns=["path", "reason"])
    return Predictions(probs, ok, errors)


def _progress() -> Progress:
    return Progress(
        TextColumn("predicting {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


# --- submission files --------------------------------------------------------------------------------------


def default_format(classes: Sequence[str], source: str | None = None) -> str:
    """The official columns of the images' challenge year where the label set makes them up, else generic.

    ISIC 2019's format is the default for any other image set whose label set makes up the 2019 classes.
    """
    if source in FORMAT_CHALLENGES and not _missing_for(source, classes):
        return source
    return "generic" if _missing_for("isic2019", classes) else "isic2019"


def submission_table(
    image_ids: Sequence[str] | pd.Series, probs: np.ndarray, classes: Sequence[str], fmt: str
) -> pd.DataFrame:
    """One row per image in an official ISIC column layout, or ``generic``: ``image`` and one column per class.

    ``isic2017``: ``image_id,melanoma,seborrheic_keratosis`` (Part 3; seborrheic keratosis from SK, else from its
    parent BKL). ``isic2018``: ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``; a model without an AKIEC output gives
    min(1, AK + SCC): the probability of "AK or SCC" for exclusive diagnoses. ``isic2019``:
    ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`` with UNK 0 (the model has no "none of these"). ``isic2020``:
    ``image_name,target`` (melanoma). See ``metrics.challenges.challenge_probabilities``.
    """
    check_format(fmt, classes)
    ids = np.asarray(image_ids, dtype=str)
    if fmt == "generic":
        return pd.DataFrame({"image": ids, **{cls: np.asarray(probs[:, i], float) for i, cls in enumerate(classes)}})
    challenge = CHALLENGES[FORMAT_CHALLENGES[fmt]]
    columns = [*challenge.columns, *challenge.unpredicted]
    frame = pd.DataFrame(challenge_probabilities(challenge, probs, classes), columns=columns)
    return frame.assign(**{challenge.id_column: ids})[[challenge.id_column, *columns]]


def check_format(fmt: str, classes: Sequence[str]) -> None:
    """Fail before any inference when the format is unknown or needs a class the model does not predict."""
    if fmt not in SUBMISSION_FORMATS:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(SUBMISSION_FORMATS)} (or auto).")
    missing = _missing_for(fmt, classes)
    if missing:
        raise ConfigError(
            f"format={fmt} needs probabilities for {missing}, which the model does not predict "
            f"(its classes: {list(classes)}; a union such as AKIEC may come from all its parts, a subtype such as "
            "SK from its parent); use format=generic."
        )


def _missing_for(fmt: str, classes: Sequence[str]) -> list[str]:
    """The classes ``fmt``'s columns need that ``classes`` cannot make up."""
    return missing_classes(CHALLENGES[FORMAT_CHALLENGES[fmt]].classes, classes) if fmt in FORMAT_CHALLENGES else []


def write_submission(path: str | Path, frame: pd.DataFrame) -> Path:
    """Full float64 precision, so a scorer reading the file ranks exactly what our metrics ranked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as partial:  # an interrupt leaves no half file
        frame.to_csv(partial, index=False)
    return path
