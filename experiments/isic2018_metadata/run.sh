#!/usr/bin/env bash
# Issue 17 item 3: image-only vs. image + patient metadata (model.metadata=[age,sex,site]) on ISIC 2018 Task 3, same
# grouped folds, seed and settings for both arms: the isic2018_task3 recipe with resnet18 from scratch at 64 px,
# EPOCHS epochs of BATCHES batches of 64, validated once at the end (full validation fold, mirror TTA).
# Every run gets one CPU core (one torch thread, no loader worker process); PARALLEL runs go side by side.
# Then compare.py: the runs' own official Task 3 score and macro AUC, mean ± std over folds (comparison.md, PNG).
# Usage, from anywhere: [EPOCHS=3] [BATCHES=40] [FOLDS="0 1 2"] [PARALLEL=1] [RESULTS=...] bash experiments/isic2018_metadata/run.sh
#   RESULTS  run folders, <RESULTS>/<arm>/fold<K>/ (default experiments/isic2018_metadata/results, git-ignored)
#   DATA     the shared data folder (default ../shared/data); CACHE the project's cache, where the folds file lives
# A finished run (metrics.json) is kept, so a stopped script continues where it was.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root: the recipe's relative paths mean what they say there
export HERE=experiments/isic2018_metadata
export EPOCHS=${EPOCHS:-3} BATCHES=${BATCHES:-40} RESULTS=${RESULTS:-$HERE/results} DATA=${DATA:-../shared/data}
export CACHE=${CACHE:-${MELANOMA_LIT_CACHE:-.cache/melanoma_lit}} PYTHON=${PYTHON:-python}
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline MPLBACKEND=Agg OMP_NUM_THREADS=1
mkdir -p "$RESULTS/logs"

run_one() {  # arm fold
  local arm=$1 fold=$2 dir=$RESULTS/$1/fold$2 log=$RESULTS/logs/$1-fold$2.log
  if [[ -f $dir/metrics.json ]]; then echo "done already: $dir"; return; fi
  local metadata='[]'
  [[ $arm == image_metadata ]] && metadata='[age,sex,site]'
  echo "$(date -Is) $arm fold $fold -> $dir"
  rm -rf "$dir"   # an unfinished run: the run-folder guard refuses a folder that holds one
  $PYTHON -m melanoma_lit.train experiment=isic2018_task3 paths.data_dir="$DATA" data.fold="$fold" seed=42 \
    backbone=resnet18 backbone.pretrained=false data.input_size=64 optimizer.layer_decay=1.0 trainer=cpu \
    trainer.precision=32-true trainer.max_epochs="$EPOCHS" +trainer.limit_train_batches="$BATCHES" \
    +trainer.check_val_every_n_epoch="$EPOCHS" callbacks.early_stopping=null data.num_workers=0 \
    "model.metadata=$metadata" paths.cache_dir="$CACHE" hydra.run.dir="$dir" > "$log" 2>&1
  echo "$(date -Is) $arm fold $fold finished"
}
export -f run_one

for fold in ${FOLDS:-0 1 2}; do
  for arm in image_only image_metadata; do echo "$arm $fold"; done
done | xargs -P "${PARALLEL:-1}" -L 1 bash -c 'run_one "$@"' _

$PYTHON $HERE/compare.py "$RESULTS" --out "$HERE"
