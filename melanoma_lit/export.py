"""python -m melanoma_lit.export ckpt=PATH format=onnx|torchscript: a deployable model + preprocessing.json."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from melanoma_lit.cli import CONFIG_DIR, friendly_errors, run
from melanoma_lit.exporting import export_checkpoint


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@friendly_errors
def main(cfg: DictConfig) -> None:
    result = export_checkpoint(
        cfg.ckpt, cfg.format, cfg.output_dir, opset=cfg.opset, check=cfg.check, tolerance=cfg.tolerance
    )
    print(f"{result.model_path}\n{result.preprocessing_path}")


if __name__ == "__main__":
    run(main, "export")
