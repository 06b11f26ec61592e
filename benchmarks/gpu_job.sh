#!/usr/bin/env bash
# The whole GPU job in one call: GPU correctness checks, then every GPU benchmark.
#
#   bash benchmarks/gpu_job.sh            # on a CUDA machine with the project installed
#
# On a lent device machine (its image has CUDA torch but not our other packages, and no network),
# first unpack the carried wheels: see benchmarks/README.md, "Running on a GPU". Results are appended
# to benchmarks/results.md; when $OUT is set (device tool), results.md and the logs are copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1
PY=${PY:-python3}
LOG=${OUT:-/tmp}/gpu_job.log
: >"$LOG"

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$LOG"

# Correctness first: the fast paths against the eager path, now with CUDA graphs (test_accel skips those on CPU).
"$PY" -m pytest -q -p no:cacheprovider tests/test_accel.py 2>&1 | tee -a "$LOG"

"$PY" benchmarks/roofline.py 2>&1 | tee -a "$LOG"
"$PY" benchmarks/roofline.py --channels 32,64,64,128 --layers-per-block 1 2>&1 | tee -a "$LOG"
"$PY" benchmarks/bench_world_model.py --gpu 2>&1 | tee -a "$LOG"
"$PY" benchmarks/bench_world_model.py --gpu --channels 64,128,128,256 --layers-per-block 2 \
    --batches 256,1024 --variants fast-bf16,graphs,compiled+graphs --train-batches 128,256 2>&1 | tee -a "$LOG"
"$PY" benchmarks/bench_ppo.py --gpu 2>&1 | tee -a "$LOG"
"$PY" benchmarks/bench_data.py --episodes 16 --feed-size 64 --feed-batch 256 2>&1 | tee -a "$LOG"

if [[ -n "${OUT:-}" ]]; then cp benchmarks/results.md "$OUT/results.md"; fi
