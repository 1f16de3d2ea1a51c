"""python -m melanoma_lit.predict ckpt=PATH input=FOLDER_OR_CSV output=preds.csv: probabilities for new images."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.prediction import predict


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@friendly_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    run(main, "predict")
