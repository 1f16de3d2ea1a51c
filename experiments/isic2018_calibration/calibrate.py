"""ECE and NLL of a run's validation fold at T = 1, with the global temperature training fitted, and per class.

Reads the run folder of run.sh: its best.ckpt holds the global temperature that training fitted on the validation
fold's logits. Fits the per-class temperatures on the same logits (models.temperature.fit_temperature), writes a
copy of best.ckpt for each variant, scores each with ``python -m melanoma_lit.evaluate`` on that fold (tta=1; also
tta=2 at T = 1 and global, to show what TTA does to the ranking), and writes ``table_<experiment>.md`` and
``reliability_<experiment>_<variant>.png`` into ``--out``.

Usage: python calibrate.py RESULTS/<experiment>/train --out EXPERIMENT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from melanoma_lit.data.build import DataSpec
from melanoma_lit.data.table import known_mask, targets
from melanoma_lit.evaluate import evaluation_set
from melanoma_lit.inference.predictions import ImageFiles, collate_skipping_failures
from melanoma_lit.models.module import LesionClassifier
from melanoma_lit.models.temperature import fit_temperature, store_temperature

VARIANTS = ("none", "global", "per_class")
TTA = {"none": (1, 2), "global": (1, 2), "per_class": (1,)}  # with mirror TTA the ranking may move: shown too
CHALLENGE_METRIC = "val/isic2018_task3/balanced_multiclass_accuracy"


def validation_logits(model: LesionClassifier, paths: list[str]) -> torch.Tensor:
    """The checkpoint's logits before any temperature, one row per image, in order."""
    loader = DataLoader(ImageFiles(paths, model.preprocessing), batch_size=128, collate_fn=collate_skipping_failures)
    parts = []
    with torch.inference_mode():
        for batch in loader:
            assert not batch["failures"], batch["failures"]
            parts.append(model(batch["image"]))
    return torch.cat(parts)


def evaluate(checkpoint: Path, run_cfg, output_dir: Path, tta: int) -> dict:
    """``python -m melanoma_lit.evaluate`` of one checkpoint on the run's validation fold; its metrics.json."""
    if not (output_dir / "metrics.json").exists():
        command = [
            sys.executable,
            "-m",
            "melanoma_lit.evaluate",
            f"ckpt={checkpoint}",
            f"data={run_cfg.data.name}",
            f"data.fold={run_cfg.data.fold}",
            f"paths.data_dir={run_cfg.paths.data_dir}",
            f"paths.cache_dir={run_cfg.paths.cache_dir}",
            f"tta={tta}",
            "data.num_workers=0",
            f"hydra.run.dir={output_dir}",
        ]
        print(" ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((output_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="<results>/<experiment>/train: the training run folder")
    parser.add_argument("--out", type=Path, required=True, help="where table_<experiment>.md and the PNGs go")
    args = parser.parse_args()
    results, name = args.run.parent, args.run.parent.name
    torch.set_num_threads(1)
    run_cfg = OmegaConf.load(args.run / "config.yaml")
    best = args.run / "checkpoints" / "best.ckpt"
    model = LesionClassifier.from_checkpoint(best).eval()
    table, _, _ = evaluation_set(DataSpec.from_config(OmegaConf.to_container(run_cfg.data, resolve=True)))
    classes = list(run_cfg.data.classes)
    assert model.classes == classes
    logits = validation_logits(model, table["path"].tolist())
    truth, known = (torch.from_numpy(f(table, classes)) for f in (targets, known_mask))
    temperatures = {
        "none": torch.ones(len(classes)),
        "global": model.temperature.clone(),
        "per_class": fit_temperature(logits, truth, known, "per_class"),
    }
    refit = fit_temperature(logits, truth, known, "global")
    print(f"global T in best.ckpt {temperatures['global'][0]:.6f}, refitted here {refit[0]:.6f}")
    trained = json.loads((args.run / "metrics.json").read_text())
    scored = {}
    for variant in VARIANTS:
        checkpoint = results / "checkpoints" / f"{variant}.ckpt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, checkpoint)
        store_temperature(checkpoint, temperatures[variant])
        for tta in TTA[variant]:
            folder = results / (f"evaluate-{variant}" + ("" if tta == 1 else f"-tta{tta}"))
            scored[variant, tta] = evaluate(checkpoint, run_cfg, folder, tta)["metrics"]
        shutil.copyfile(
            results / f"evaluate-{variant}" / "reliability.png", args.out / f"reliability_{name}_{variant}.png"
        )
    rows = []
    for (variant, tta), values in scored.items():
        reference = scored["none", tta]
        auc_change = max(abs(values[f"val/auc/{c}"] - reference[f"val/auc/{c}"]) for c in classes)
        t = temperatures[variant]
        shown = " / ".join(f"{v:.2f}" for v in t.tolist()) if variant == "per_class" else f"{t[0]:.3f}"
        rows.append(
            f"| {variant} | {tta} | {shown} | {values['val/nll']:.4f} | {values['val/ece_macro']:.4f} | "
            + " / ".join(f"{values[f'val/ece/{c}']:.3f}" for c in classes)
            + f" | {values['val/auc_macro']:.4f} | {auc_change:.1e} | {values['val/malignant_auc']:.4f} | "
            + f"{values[CHALLENGE_METRIC]:.4f} |"
        )
    names = " / ".join(classes)
    header = (
        f"| temperature | TTA views | T ({names} for per_class) | NLL | ECE macro | ECE {names} | macro AUC | "
        "max per-class AUC change vs. T = 1 at the same TTA | malignant AUC | Task 3 balanced accuracy |\n"
        + "|---" * 10
        + "|\n"
    )
    text = header + "\n".join(rows) + "\n"
    report = trained["calibration"]
    before, after = report["before"], report["after"]
    text += (
        f"\nTraining's own report (metrics.json, {len(table)} validation images): global T "
        f"{report['temperature'][classes[0]]:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}, "
        f"ECE macro {before['ece_macro']:.4f} -> {after['ece_macro']:.4f}.\n"
    )
    (args.out / f"table_{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
