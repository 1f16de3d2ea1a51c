"""python -m melanoma_lit.evaluate ckpt=PATH [data=...] [data.test=...]: score checkpoints on a labelled set."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.evaluation import evaluate


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    metrics = evaluate(cfg)
    return next((value for key, value in metrics.items() if key.endswith("/auc_macro")), None)


if __name__ == "__main__":
    run(main, "evaluate")
