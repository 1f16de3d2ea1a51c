#!/usr/bin/env bash
# Issue 7's table on one GPU: `python -m melanoma_lit.bench` per backbone, batch 128, bf16 + channels_last
# (trainer=gpu), every CPU core a loader worker, on a synthetic ISIC-layout set read from the resize cache, as a
# run on prepared real data reads it. Run from the repository root on the GPU machine:
#   bash experiments/benchmarks/run.sh                         # the five backbones
#   bash experiments/benchmarks/run.sh resnet18 resnet152      # some of them
# Each run folder $OUT/<backbone>/ holds bench.json; the table is printed at the end of each run.
set -euo pipefail
OUT=${OUT:-outputs/benchmarks}
# 16,000 images: 100 training batches (no epoch boundary inside the 60 timed steps), 25 full validation batches
DATA="data.synthetic.n=16000 data.synthetic.size=384"
BACKBONES=("$@")
[ ${#BACKBONES[@]} -gt 0 ] || BACKBONES=(resnet18 resnet152 densenet201 inception_v3 inception_resnet_v2)

# once: draw the set (cached) and shrink it to shorter side 374, which serves the 224 px and the 299 px models
python -m melanoma_lit.prepare $DATA 'prepare.sizes=[224,299]' hydra.run.dir="$OUT/prepare"
for backbone in "${BACKBONES[@]}"; do
  python -m melanoma_lit.bench backbone="$backbone" trainer=gpu data.batch_size=128 $DATA hydra.run.dir="$OUT/$backbone"
done
