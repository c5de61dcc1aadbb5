#!/usr/bin/env bash
# The equal-epoch ablation on a 2-core CPU: MLFFM skips against plain skips at the shipped architecture
# (96 px, widths 16-128), from scratch, two seeds each, the same EPOCHS for every run; then each scored on val.
#
#   bash scripts/equal_epoch_ablation.sh ../shared/data/isic2018_task1 runs/ab      # EPOCHS=8: about 65 min
#
# One lane per core (OMP_NUM_THREADS=1: on shared cores one thread each is far faster than two); lane s runs
# seed s with MLFFM, then with plain skips. The time budget is a runaway guard only, so the cosine schedule
# follows the epochs and every run sees the same number of steps.
set -euo pipefail
DATA=${1:?dataset folder}
OUT=${2:?output folder}
EPOCHS=${EPOCHS:-8}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
lane() {
  local seed=$1
  for fusion in mlffm plain; do
    "$PY" -m training.cli train "$DATA" -o "$OUT/ab_${fusion}_${seed}.mlffm" --fusion "$fusion" --size 96 \
      --epochs "$EPOCHS" --batch-size 16 --lr 1e-3 --seed "$seed" --time-budget 600 --progress json >"$OUT/ab_${fusion}_${seed}.log" 2>&1
  done
}
lane 0 & lane 1 & wait
for seed in 0 1; do
  for fusion in mlffm plain; do
    "$PY" -m training.cli evaluate "$DATA" --split val --checkpoint "$OUT/ab_${fusion}_${seed}.mlffm" \
      --json "$OUT/ab_${fusion}_${seed}.val.json" >"$OUT/ab_${fusion}_${seed}.val.log" 2>&1 &
  done
  wait
done
rm -f "$OUT"/*.resume.mlffm
"$PY" benchmarks/quick_val.py "$DATA" "$OUT"/ab_*.mlffm
