#!/usr/bin/env bash
# Cross-validation study on the synthetic set, CPU: 2 backbones x 3 folds (6 jobs, one after another), then the
# sweep report, copied here without the per-job outputs. Usage: bash experiments/synthetic_cv/run.sh [SWEEP_DIR]
set -euo pipefail
SWEEP=${1:-multirun/synthetic_cv}
python -m melanoma_lit.train -m experiment=demo task_name=synthetic_cv \
  backbone=resnet18,densenet201 data.input_size=64 backbone.pretrained=false \
  data.synthetic.n=1000 data.num_folds=3 data.fold=0,1,2 trainer.max_epochs=4 \
  hydra.sweep.dir="$SWEEP"
rm -rf "$(dirname "$0")/report" && cp -r "$SWEEP/report" "$(dirname "$0")/report"
