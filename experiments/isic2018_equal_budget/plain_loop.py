"""The equal-compute baseline of issue 15: a plain PyTorch + timm loop on ISIC 2018 Task 3 (HAM10000).

Images decoded once into memory (shorter side resized to int(1.15 * input size), centre square kept, uint8), AdamW
and a one-cycle schedule stepped per batch, random crop + flips + brightness on tensors, cross-entropy (optionally
class-weighted), mirror TTA. It validates on exactly the fold that `python -m melanoma_lit.train
experiment=isic2018_task3 data.fold=K` validates on: the package's own build_datamodule makes the split.
Not part of the package. --limit N keeps about N training and N validation images, every class (a quick check).
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from isic_challenge_scoring import ClassificationMetric, ClassificationScore
from PIL import Image, ImageOps
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from melanoma_lit.train import build_datamodule

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]  # Task 3's columns, in its order
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def fold_tables(fold: int, data_root: Path, cache_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) of the recipe's fold: its config composed as the train command composes it, split by the
    DataModule train.py builds (same folds file under cache_dir; made there, identically, if absent)."""
    overrides = [f"paths.data_dir={data_root}", f"data.fold={fold}", f"paths.cache_dir={cache_dir}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        datamodule = build_datamodule(compose("train", overrides=["experiment=isic2018_task3", *overrides]))
    datamodule.setup()
    return datamodule.splits.train, datamodule.splits.val


def load_images(paths: list[str], side: int) -> torch.Tensor:
    """uint8 (N, 3, side, side): the centre square, shorter side resized to ``side`` (bicubic)."""
    images = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc="decode", leave=False)):
        with Image.open(path) as image:
            image.draft("RGB", (side, side))  # JPEG DCT scaling, never below side
            square = ImageOps.fit(image.convert("RGB"), (side, side), Image.Resampling.BICUBIC)
        images[i] = torch.from_numpy(np.array(square)).permute(2, 0, 1)
    return images


def augment(images: torch.Tensor, size: int) -> torch.Tensor:
    """Random size x size crop, horizontal and vertical flips, brightness x U(0.8, 1.2); float in [0, 1]."""
    top, left = torch.randint(0, images.shape[-1] - size + 1, (2, len(images))).tolist()
    x = torch.stack([im[:, t : t + size, s : s + size] for im, t, s in zip(images, top, left, strict=True)]) / 255
    hflip, vflip = torch.rand(2, len(x), 1, 1, 1) < 0.5
    x = torch.where(hflip, x.flip(3), x)
    x = torch.where(vflip, x.flip(2), x)
    return (x * torch.empty(len(x), 1, 1, 1).uniform_(0.8, 1.2)).clamp(0, 1)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, size: int, batch_size: int) -> np.ndarray:
    """Mirror TTA: mean softmax of the centre crop and its horizontal flip."""
    model.eval()
    o, probs = (images.shape[-1] - size) // 2, []
    for start in range(0, len(images), batch_size):
        x = (images[start : start + batch_size, :, o : o + size, o : o + size] / 255 - MEAN) / STD
        probs.append((model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2)
    return torch.cat(probs).numpy()


def scores(probs: np.ndarray, y: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """Balanced multiclass accuracy (mean recall of the argmax over the classes present), melanoma AUC, recalls."""
    recall = {name: float(np.mean(probs[y == c].argmax(1) == c)) for c, name in enumerate(CLASSES) if (y == c).any()}
    mel_auc = roc_auc_score(y == 0, probs[:, 0]) if 0 < (y == 0).sum() < len(y) else float("nan")
    return float(np.mean(list(recall.values()))), float(mel_auc), recall


def main() -> None:
    started = time.perf_counter()  # after the imports (as the recipe's job.json seconds), before any data
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)  # the recipe's (conf/optimizer/adamw.yaml)
    parser.add_argument("--weighted", action="store_true", help="class-weighted CE: 1 / class count, mean 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="keep ~N training and N validation images, N/7 a class (a check)")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    cache = os.environ.get("MELANOMA_LIT_CACHE", ".cache/melanoma_lit")  # the project's: its folds file
    parser.add_argument("--cache-dir", type=Path, default=cache, help="relative to the repository root, as train's")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: this machine's cores)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    train, val = fold_tables(args.fold, args.data_root.resolve(), REPO / args.cache_dir)  # cache relative to repo
    truth = pd.read_csv(args.data_root / "isic2018" / "ISIC2018_Task3_Training_GroundTruth.csv", index_col="image")
    labels = lambda t: truth.loc[t["image_id"], CLASSES].to_numpy().argmax(1)  # noqa: E731
    if args.limit:  # every class kept: the official scorer needs each in the truth file
        shuffled = (t.sample(frac=1, random_state=args.seed) for t in (train, val))
        train, val = (t.groupby(labels(t)).head(max(1, args.limit // len(CLASSES))) for t in shuffled)
    y_train, y_val = (torch.from_numpy(labels(t)) for t in (train, val))
    print(f"fold {args.fold}: {len(train)} training, {len(val)} validation images")
    side = int(args.input_size * 1.15)
    x_train, x_val = load_images(train["path"].tolist(), side), load_images(val["path"].tolist(), side)

    model = timm.create_model("resnet18", pretrained=False, num_classes=len(CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    batch = min(args.batch_size, len(train))
    steps = len(train) // batch  # the last partial batch is dropped
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps)
    counts = torch.bincount(y_train, minlength=len(CLASSES)).clamp(min=1).float()
    weight = (1 / counts) / (1 / counts).mean() if args.weighted else None
    (args.out / "epochs.jsonl").write_text("")
    best = (-1.0, None, None, None)  # (balanced accuracy, probabilities, melanoma AUC, recalls) of the best epoch
    for epoch in range(args.epochs):
        model.train()
        order, total = torch.randperm(len(train)), 0.0
        for i in (bar := tqdm(range(steps), desc=f"epoch {epoch + 1}/{args.epochs}")):
            idx = order[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model((augment(x_train[idx], args.input_size) - MEAN) / STD), y_train[idx], weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (i + 1):.4f}")
        probs = predict(model, x_val, args.input_size, 2 * args.batch_size)
        bacc, mel_auc, recall = scores(probs, y_val.numpy())
        if bacc > best[0]:  # kept as the recipe keeps its best checkpoint: both choose on the validation fold
            best = (bacc, probs, mel_auc, recall)
        row = {
            "epoch": epoch,
            "wall_seconds": time.perf_counter() - started,
            "train_loss": total / steps,
            "val_balanced_accuracy": bacc,
            "val_mel_auc": mel_auc,
        }
        with (args.out / "epochs.jsonl").open("a") as log:
            print(json.dumps(row), file=log)
        print(row)

    _, probs, mel_auc, recall = best
    truth_csv, predictions_csv = args.out / "isic2018_task3_truth.csv", args.out / "isic2018_task3_predictions.csv"
    ids = val["image_id"].tolist()
    truth.loc[ids, CLASSES].rename_axis("image").reset_index().to_csv(truth_csv, index=False)
    predictions = pd.DataFrame(probs, columns=CLASSES).assign(image=ids)[["image", *CLASSES]]
    predictions.to_csv(predictions_csv, index=False, float_format="%.8f")
    official = ClassificationScore.from_file(truth_csv, predictions_csv, ClassificationMetric.BALANCED_ACCURACY)
    result = {
        "balanced_multiclass_accuracy": float(official.overall),
        "mel_auc": mel_auc,
        "argmax_recall": recall,  # their mean is the balanced multiclass accuracy
        "sensitivity_at_0.5": official.per_category["sensitivity"].astype(float).to_dict(),  # the scorer's, thresholded
        "wall_seconds": time.perf_counter() - started,
        "train_images": len(train),
        "val_images": len(val),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("balanced_multiclass_accuracy", "mel_auc", "wall_seconds")}))


if __name__ == "__main__":
    main()
