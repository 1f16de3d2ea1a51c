#!/usr/bin/env bash
# Recipe vs. baseline on ISIC 2018 (HAM10000, the 10,015 shared images), grouped 5-fold, fold 0,
# resnet18 from scratch at 64 px on a 2-core CPU (no GPU, no pretrained weights on this machine).
# Usage: [EPOCHS=5] [PARALLEL=1] [OUT=/tmp/isic2018_cpu] bash experiments/isic2018_cpu/run.sh
# PARALLEL=1 runs the two trainings side by side, one core (one torch thread, one loader worker) each.
set -euo pipefail
DATA=${MELANOMA_LIT_TEST_DATA:-../shared/data}/isic2018
WORKERS=2
if [[ ${PARALLEL:-0} == 1 ]]; then export OMP_NUM_THREADS=1; WORKERS=1; fi
COMMON="data.root=$DATA data.fold=0 backbone=resnet18 backbone.pretrained=false data.input_size=64
        optimizer.layer_decay=1.0 trainer=cpu trainer.precision=32-true trainer.max_epochs=${EPOCHS:-5}
        callbacks.early_stopping=null data.num_workers=$WORKERS"
for experiment in isic2018_task3 isic2018_baseline; do
  if [[ ${PARALLEL:-0} == 1 ]]; then
    python -m melanoma_lit.train experiment=$experiment $COMMON hydra.run.dir=${OUT:-/tmp/isic2018_cpu}/$experiment &
  else
    python -m melanoma_lit.train experiment=$experiment $COMMON hydra.run.dir=${OUT:-/tmp/isic2018_cpu}/$experiment
  fi
done
wait
