#!/usr/bin/env bash
# Issue 15 item 3, equal compute: the `isic2018_task3` recipe vs. a plain PyTorch + timm loop (plain_loop.py) with
# and without class weights; same backbone (resnet18 from scratch), input size (64 px), epochs and grouped folds.
# Every run gets one CPU core (one torch thread, no loader worker process); PARALLEL runs go side by side.
# Then compare.py: official ISIC 2018 Task 3 balanced multiclass accuracy per fold and time-to-accuracy curves.
# Usage, from anywhere: [EPOCHS=5] [FOLDS="0 1 2"] [PARALLEL=2] [RESULTS=...] bash experiments/isic2018_equal_budget/run.sh
#   RESULTS  run folders, <RESULTS>/<arm>/fold<K>/ (default experiments/isic2018_equal_budget/results, git-ignored)
#   DATA     the shared data folder (default ../shared/data); CACHE the project's cache, where the folds file lives
#   EXTRA_LOOP / EXTRA_RECIPE  more options for the loop / overrides for the recipe, e.g. for a smoke test:
#            EPOCHS=1 FOLDS=0 EXTRA_LOOP="--limit 256" EXTRA_RECIPE="+trainer.limit_train_batches=4" RESULTS=/tmp/x
# A finished run (result.json / metrics.json) is kept, so a stopped script continues where it was.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root: the recipe's relative paths mean what they say there
export HERE=experiments/isic2018_equal_budget
export EPOCHS=${EPOCHS:-5} RESULTS=${RESULTS:-$HERE/results} DATA=${DATA:-../shared/data}
export CACHE=${CACHE:-${MELANOMA_LIT_CACHE:-.cache/melanoma_lit}} PYTHON=${PYTHON:-python}
export EXTRA_LOOP=${EXTRA_LOOP:-} EXTRA_RECIPE=${EXTRA_RECIPE:-}
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline MPLBACKEND=Agg OMP_NUM_THREADS=1
mkdir -p "$RESULTS/logs"

run_one() {  # arm fold
  local arm=$1 fold=$2 dir=$RESULTS/$1/fold$2 log=$RESULTS/logs/$1-fold$2.log
  if [[ -f $dir/result.json || -f $dir/metrics.json ]]; then echo "done already: $dir"; return; fi
  echo "$(date -Is) $arm fold $fold -> $dir"
  if [[ $arm == recipe ]]; then
    rm -rf "$dir"   # an unfinished run: the run-folder guard refuses a folder that holds one
    $PYTHON -m melanoma_lit.train experiment=isic2018_task3 paths.data_dir="$DATA" data.fold="$fold" \
      backbone=resnet18 backbone.pretrained=false data.input_size=64 optimizer.layer_decay=1.0 trainer=cpu \
      trainer.precision=32-true trainer.max_epochs="$EPOCHS" callbacks.early_stopping=null data.num_workers=0 \
      paths.cache_dir="$CACHE" $EXTRA_RECIPE hydra.run.dir="$dir" > "$log" 2>&1
  else
    $PYTHON $HERE/plain_loop.py --fold "$fold" --epochs "$EPOCHS" --input-size 64 --batch-size 64 --lr 1e-3 \
      --threads 1 $([[ $arm == plain_weighted_ce ]] && echo --weighted) --data-root "$DATA" --cache-dir "$CACHE" \
      $EXTRA_LOOP --out "$dir" > "$log" 2>&1
  fi
  echo "$(date -Is) $arm fold $fold finished"
}
export -f run_one

for fold in ${FOLDS:-0 1 2}; do
  for arm in recipe plain_ce plain_weighted_ce; do echo "$arm $fold"; done
done | xargs -P "${PARALLEL:-2}" -L 1 bash -c 'run_one "$@"' _

$PYTHON $HERE/compare.py "$RESULTS" --out "$HERE"
