#!/usr/bin/env bash
# Recipe vs. baseline on ISIC 2018 (HAM10000, the 10,015 shared images), grouped 5-fold, fold 0,
# resnet18 from scratch at 64 px for 5 epochs on a 2-core CPU (no GPU, no pretrained weights on this machine).
set -euo pipefail
DATA=${MELANOMA_LIT_TEST_DATA:-../shared/data}/isic2018
COMMON="data.root=$DATA data.fold=0 backbone=resnet18 backbone.pretrained=false backbone.input_size=64
        optimizer.layer_decay=1.0 trainer=cpu trainer.precision=32-true trainer.max_epochs=5
        callbacks.early_stopping=null data.num_workers=2"
for experiment in isic2018_task3 isic2018_baseline; do
  python -m melanoma_lit.train experiment=$experiment $COMMON hydra.run.dir=${OUT:-/tmp/isic2018_cpu}/$experiment
done
