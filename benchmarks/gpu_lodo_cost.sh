#!/usr/bin/env bash
# Issue 40's GPU checks in one run (about 10 minutes on one H100), for a machine with CUDA:
#   1. image_generation steps/s of LODO and Adam (the paper: 5.64 and 7.08 on two V100s),
#   2. population batching (P = 8, 32, 128) with both sides on the GPU,
#   3. LODO's step cost against Adam/AdamW (bowl, transformer) and in sweeps over θ,
#   4. the main job on the GPU, timed.
# Usage: OUT=/some/dir bash benchmarks/gpu_lodo_cost.sh      (results and logs go to $OUT)
set -u
OUT=${OUT:-/tmp/gpu_lodo_cost}
mkdir -p "$OUT"
PY=${PY:-python}
cd "$(dirname "$0")/.."
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 240 $PY benchmarks/gpu_image_tasks.py --device cuda --steps 500 --tasks image_generation \
    --json "$OUT/gpu_image_tasks.json" > "$OUT/gpu_image_tasks.log" 2>&1
timeout 120 $PY benchmarks/population.py --device cuda --optimizers Adam LODO --dims 100 1000 \
    --rounds 2 > "$OUT/population.log" 2>&1
timeout 120 $PY benchmarks/step_cost.py --device cuda --threads 1 --skip-cnn --rounds 3 \
    --sweep-n 1000000 > "$OUT/step_cost.log" 2>&1
( cd "$OUT" && timeout 300 /usr/bin/time -v lodo-tune --task noisy_bowl --time-milestone none --device cuda \
    > main_job.log 2> main_job.time )
tail -n 5 "$OUT"/*.log
