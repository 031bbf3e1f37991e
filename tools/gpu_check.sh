#!/usr/bin/env bash
# The prepared GPU check (issue 17): one call on a machine with an NVIDIA GPU, CuPy, PyTorch and
# transformers already installed (it installs nothing they provide). In at most ~8 minutes:
#   1. the GPU-marked tests (every module, fused kernels against the NumPy reference, fp16);
#   2. python -m baby bench gpu: nanoGPT's shakespeare-char shape side by side with PyTorch eager,
#      fp32 / TF32 / fp16, and a training run of TRAIN_ITERS iterations on both sides.
# Outputs land in outputs/ (bench_gpu.json/.md) and, when $OUT is set, are copied there too.
#   tools/gpu_check.sh            the real check
#   tools/gpu_check.sh --dry-run  the same script on the CPU with tiny shapes (checks the script)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
DRY=""
[[ "${1:-}" == "--dry-run" ]] && DRY="--dry-run"
TRAIN_ITERS="${TRAIN_ITERS:-5000}"
python -c "import baby" 2>/dev/null || python -m pip install -q --no-deps -e .
python - <<'PY'
from baby import backend
print("GPU usable:", backend.gpu_available())
PY
if [[ -z "$DRY" ]]; then
  python -m pytest -q -m gpu 2>&1 | tail -n 40 || echo "GPU tests failed (above); the benchmark runs anyway"
  python -m baby bench gpu --train-iters "$TRAIN_ITERS"
else
  python -m baby bench gpu --dry-run --steps 3 --warmup 1 --repeats 1 --train-iters 20 --out "${TMPDIR:-/tmp}"
fi
if [[ -n "${OUT:-}" && -z "$DRY" ]]; then
  cp outputs/bench_gpu.json outputs/bench_gpu.md "$OUT"/
fi
