#!/usr/bin/env bash
# Every GPU row of docs/benchmarks.md in one run on one CUDA machine, each part under its own time
# limit so that a slow part cannot lose the others; results (JSON and logs) go to OUT (default
# benchmarks/results/gpu). Usage: benchmarks/gpu_rows.sh [OUT]
#   1. bench_spaces --device cuda, configs/demo.yaml's U-Net (the CPU table's network): the four
#      sizes x pixel/wavelet/latent, then 512x512xZ training steps until out of memory
#   2. the same for the shipped demo's network (configs/demo-128.yaml, 16 latent channels), latent
#   3. benchmarks/gpu_smoke.sh: ctdiff's own commands (train-autoencoder, train, resume, sample) on cuda
#   4. bench_train: thesis network vs ctdiff at 256x256x32 (2 rounds), then ctdiff under torch.compile
#   5. bench_train --find-max (the largest in-plane size at 32 slices, per variant)
set -uo pipefail
O=${1:-benchmarks/results/gpu}
mkdir -p "$O"
export PYTHONUNBUFFERED=1
part() { local t=$1; shift; echo "== $(date +%T) $* (limit ${t}s)"; timeout "$t" "$@"; echo "== exit $?"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, monai, diffusers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
part "${T1:-170}" python benchmarks/bench_spaces.py --device cuda --reps 2 --find-max 128 192 256 384 512 768 1024 1536 2048 \
    --json "$O/spaces-gpu.json"
part "${T2:-60}" python benchmarks/bench_spaces.py --device cuda --reps 2 --config configs/demo-128.yaml --latent-channels 16 \
    --spaces latent --find-max 256 512 1024 2048 --json "$O/spaces-gpu-demo128.json"
part "${T3:-80}" bash benchmarks/gpu_smoke.sh "$(mktemp -d)" cuda
part "${T4:-110}" python benchmarks/bench_train.py --device cuda --size 256 256 32 --rounds 2 --steps 3 \
    --json "$O/train-gpu.json"
part "${T5:-100}" python benchmarks/bench_train.py --device cuda --size 256 256 32 --variants ctdiff --compile --rounds 1 \
    --steps 3 --json "$O/train-gpu-compile.json"
part "${T6:-120}" python benchmarks/bench_train.py --device cuda --find-max --json "$O/train-gpu-max.json"
