#!/usr/bin/env bash
# One prepared GPU session for the accuracy and interactive issues: every run in parallel on one GPU,
# each with a time budget, then every candidate scored on val, checkpoints and reports copied to OUT.
#
#   python scripts/make_compact_copy.py ../shared/data/isic2018_task1 runs/isic160 --size 160   # here, once (train + val only)
#   bash scripts/gpu_session.sh runs/isic160 "$OUT"                       # on the GPU machine (carry runs/isic160)
#   SMOKE=1 bash scripts/gpu_session.sh tests/fixtures/isic_small /tmp/smoke   # on the CPU first: same steps, tiny
#
# Runs (MINUTES each, default 7, all at once):
#   prompt      the shipped weights + prompt branch, --freeze-base (no-click proposals stay the shipped ones),
#               clicks on its own errors for half the samples (--own-errors 0.5)
#   shifts      the shipped weights, warm start with --acquisition-shifts 0.3 (another clinic's camera)
#   noshifts    the same warm start without them: the control for "shifts" and "deepsup"
#   deepsup     the same warm start with --deep-supervision 2 (clean-mask heads at 1/2 and 1/4 of the size)
#   ab_{mlffm,plain}_{0,1}  the equal-epoch ablation: the shipped architecture from scratch, MLFFM against
#               plain skips, two seeds each, EPOCHS epochs each (default 12), the time budget only as a guard
# Then: mlffm evaluate --split val on the compact copy for each (paired, one seed), and the robustness
# benchmark on val for shifts against noshifts. Selection is on val; test is scored later, once, here.
set -euo pipefail
DATA=${1:?dataset folder (a compact copy of train + val)}
OUT=${2:?output folder}
MINUTES=${MINUTES:-7}
EPOCHS=${EPOCHS:-12}
WARM_EPOCHS=${WARM_EPOCHS:-15}
# Runs of a fixed epoch count (ablation, shifts) stop at this budget only if their epochs overrun (their logs
# say which stop it was); the whole session, evaluations included, must fit one 10-minute device call.
GUARD_MINUTES=${GUARD_MINUTES:-$MINUTES}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # eight processes share the CPU that feeds the GPU
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-32}
PY=${PYTHON:-python}
extra=()
limit=()
ab_size=(--size 96)
robust_limit=200
clicks_n=150
if [[ -n "${SMOKE:-}" ]]; then
  MINUTES=0.5 EPOCHS=1 WARM_EPOCHS=1 DEVICE=cpu BATCH=4 GUARD_MINUTES=2
  extra=(--size 32)
  limit=(--limit 6)
  ab_size=(--size 32 --widths 8,16)
  robust_limit=2
  clicks_n=3
fi
mkdir -p "$OUT"
mlffm() { "$PY" -m training.cli "$@"; }
guard=(--time-budget "$GUARD_MINUTES")
common=(--batch-size "$BATCH" --device "$DEVICE" --progress json --time-budget "$MINUTES")
warm=(--init model/weights/default.mlffm --epochs 3000 ${extra[@]+"${extra[@]}"} ${limit[@]+${limit[@]+"${limit[@]}"}})

mlffm train "$DATA" -o "$OUT/prompt.mlffm" --init model/weights/default.mlffm ${limit[@]+"${limit[@]}"} "${common[@]}" --epochs 3000 --time-budget "$MINUTES" --click-prob 1 --own-errors 0.5 --freeze-base --lr 5e-4 --seed 21 >"$OUT/prompt.log" 2>&1 &
mlffm train "$DATA" -o "$OUT/shifts.mlffm" "${warm[@]}" "${common[@]}" "${guard[@]}" --epochs "$WARM_EPOCHS" --acquisition-shifts 0.3 --lr 2e-4 --high-t-fraction 0.6 --seed 22 >"$OUT/shifts.log" 2>&1 &
mlffm train "$DATA" -o "$OUT/noshifts.mlffm" "${warm[@]}" "${common[@]}" "${guard[@]}" --epochs "$WARM_EPOCHS" --lr 2e-4 --high-t-fraction 0.6 --seed 22 >"$OUT/noshifts.log" 2>&1 &
mlffm train "$DATA" -o "$OUT/deepsup.mlffm" "${warm[@]}" "${common[@]}" "${guard[@]}" --epochs "$WARM_EPOCHS" --deep-supervision 2 --lr 2e-4 --high-t-fraction 0.6 --seed 22 >"$OUT/deepsup.log" 2>&1 &
for fusion in mlffm plain; do
  for seed in 0 1; do
    mlffm train "$DATA" -o "$OUT/ab_${fusion}_${seed}.mlffm" --fusion "$fusion" --epochs "$EPOCHS" --lr 1e-3 --seed "$seed" \
      "${ab_size[@]}" ${limit[@]+"${limit[@]}"} "${common[@]}" "${guard[@]}" >"$OUT/ab_${fusion}_${seed}.log" 2>&1 &
  done
done
wait
rm -f "$OUT"/*.resume.mlffm  # resume states are several times the weights: they would crowd out what must come back
for name in shifts noshifts deepsup ab_mlffm_0 ab_mlffm_1 ab_plain_0 ab_plain_1; do
  if [[ -f "$OUT/$name.mlffm" ]]; then
    mlffm evaluate "$DATA" --split val --checkpoint "$OUT/$name.mlffm" --device "$DEVICE" ${limit[@]+"${limit[@]}"} --json "$OUT/$name.val.json" >"$OUT/$name.val.log" 2>&1 &
  fi
done
# The prompt run's no-click proposals are the shipped ones by construction: what it changes is the click protocol.
clicks_limit=(--limit "$clicks_n")
if [[ -f "$OUT/prompt.mlffm" ]]; then
  mlffm evaluate "$DATA" --split val --checkpoint "$OUT/prompt.mlffm" --device "$DEVICE" "${clicks_limit[@]}" --clicks 5 --json "$OUT/prompt.clicks.json" >"$OUT/prompt.clicks.log" 2>&1 &
fi
mlffm evaluate "$DATA" --split val --device "$DEVICE" "${clicks_limit[@]}" --clicks 5 --click-mode kept --json "$OUT/kept.clicks.json" >"$OUT/kept.clicks.log" 2>&1 &
wait || true
if [[ -f "$OUT/noshifts.mlffm" && -f "$OUT/shifts.mlffm" ]]; then
  "$PY" benchmarks/robustness_shifts.py "$DATA" --split val --checkpoint "$OUT/noshifts.mlffm" --checkpoint "$OUT/shifts.mlffm" \
    --device "$DEVICE" --limit "$robust_limit" --samples 4 >"$OUT/robustness.txt" 2>"$OUT/robustness.log" || echo "robustness benchmark failed: $OUT/robustness.log" >&2
fi
"$PY" - "$OUT" <<'SUMMARY' | tee "$OUT/summary.txt" || true
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'run':<12} {'epochs':>6} {'val Dice':>9} {'HD95':>7} {'ECE':>7}")
for report in sorted(out.glob("*.val.json")):
    name = report.name.removesuffix(".val.json")
    metrics = json.loads(report.read_text())["metrics"]
    log = [json.loads(l) for l in (out / f"{name}.log").read_text().splitlines() if l.startswith("{")]
    epochs = max([e.get("epoch", 0) for e in log if e.get("event") == "epoch_end"], default=0)
    print(f"{name:<12} {epochs:>6} {metrics['dice']:>9.4f} {metrics.get('hd95', float('nan')):>7.2f} {metrics.get('ece', float('nan')):>7.4f}")
for report in sorted(out.glob("*.clicks.json")):
    clicks = json.loads(report.read_text())["clicks"]
    after = " ".join(f"{d:.4f}" for d in clicks["dice_after"])
    print(f"{report.name}: Dice after 0..K clicks {after}; NoC@90 {clicks['noc90']:.2f}; >= 0.90 within 3 {clicks['share_90_within_3']:.3f}")
SUMMARY
rm -f "$OUT"/*.resume.mlffm  # the resume states are several times the weights; the logs say how far each got
ls -l "$OUT"
