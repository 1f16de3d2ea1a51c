"""python -m melanoma_lit.train [overrides]: train one model; returns the monitored metric to sweepers."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors
from melanoma_lit.training import train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.monitor)


if __name__ == "__main__":
    main()
