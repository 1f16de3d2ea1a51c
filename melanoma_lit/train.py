"""python -m melanoma_lit.train [overrides]: train one model; returns the monitored metric to sweepers."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    # imported here so that --help and --cfg answer at once
    from melanoma_lit.training import cross_validate, train

    metrics = cross_validate(cfg) if OmegaConf.is_list(cfg.data.fold) else train(cfg)
    return metrics.get(cfg.monitor)


if __name__ == "__main__":
    run(main, "train")
