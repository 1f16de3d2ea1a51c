"""python -m melanoma_lit.bench [overrides]: images per second of every training stage; bench.json in the run folder."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
@friendly_errors
def main(cfg: DictConfig) -> None:
    # imported here so that --help and --cfg answer at once
    from melanoma_lit.benchmark import print_report, run_bench

    command = " ".join(["python -m melanoma_lit.bench", *HydraConfig.get().overrides.task])
    print_report(run_bench(cfg, command=command))


if __name__ == "__main__":
    run(main, "bench")
