"""python -m melanoma_lit.train [overrides]: train one model; returns the monitored metric to sweepers."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    from melanoma_lit.training import train  # imported here so that --help and --cfg answer at once

    metrics = train(cfg)
    return metrics.get(cfg.monitor)


if __name__ == "__main__":
    main()
