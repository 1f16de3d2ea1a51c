#!/usr/bin/env bash
# Issue 17 item 1: NLL, ECE and reliability diagrams of the ISIC 2018 validation fold (Task 3's seven classes, fold 0)
# before and after temperature scaling, global and per class. Per EXPERIMENTS entry one short CPU training (resnet18
# from scratch, 64 px, EPOCHS epochs of BATCHES batches; training fits the global temperature into best.ckpt, the
# default model.temperature=global), then calibrate.py: per-class temperatures on the same validation logits and
# `evaluate` of the checkpoint at T = 1, global and per class.
# Usage, from anywhere: [EXPERIMENTS="isic2018_baseline isic2018_task3"] [EPOCHS=3] [BATCHES=50] [RESULTS=...] \
#   bash experiments/isic2018_calibration/run.sh
#   RESULTS  the run folders, <RESULTS>/<experiment>/ (default experiments/isic2018_calibration/results, git-ignored)
#   DATA     the shared data folder (default ../shared/data); CACHE the project's cache, where the folds file lives
# A finished training (metrics.json) is kept, and so is each finished evaluate: a stopped script continues.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root
HERE=experiments/isic2018_calibration
EPOCHS=${EPOCHS:-3} BATCHES=${BATCHES:-50} RESULTS=${RESULTS:-$HERE/results}
DATA=$(realpath "${DATA:-../shared/data}") CACHE=$(realpath -m "${CACHE:-${MELANOMA_LIT_CACHE:-.cache/melanoma_lit}}")
PYTHON=${PYTHON:-python}
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline MPLBACKEND=Agg OMP_NUM_THREADS=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # calibrate.py imports this checkout's package
for experiment in ${EXPERIMENTS:-isic2018_baseline isic2018_task3}; do
  run=$RESULTS/$experiment/train
  if [[ ! -f $run/metrics.json ]]; then
    rm -rf "$run"   # an unfinished run: the run-folder guard refuses a folder that holds one
    mkdir -p "$RESULTS/$experiment"
    echo "$(date -Is) training $experiment -> $run"
    $PYTHON -m melanoma_lit.train experiment="$experiment" paths.data_dir="$DATA" paths.cache_dir="$CACHE" \
      data.fold=0 backbone=resnet18 backbone.pretrained=false data.input_size=64 optimizer.layer_decay=1.0 \
      trainer=cpu trainer.precision=32-true trainer.max_epochs="$EPOCHS" +trainer.limit_train_batches="$BATCHES" \
      callbacks.early_stopping=null data.num_workers=0 hydra.run.dir="$run" > "$RESULTS/$experiment/train.log" 2>&1
    echo "$(date -Is) trained $experiment"
  fi
  $PYTHON $HERE/calibrate.py "$run" --out "$HERE"
done
