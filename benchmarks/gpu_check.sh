#!/usr/bin/env bash
# GPU readiness check (issue 19): the CUDA tests and the training-speed benchmark, in under 5 minutes on one GPU.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # from anywhere; results go to $OUT (default: the current dir)
#
# What it needs (it installs nothing: the GPU machine has no network):
#   * an NVIDIA driver (nvidia-smi) and a Python with a CUDA build of torch (2.13 was the target) and the
#     package's other dependencies (torchsde, torchdiffeq, numpy, scipy, pot, scikit-learn, opacus, tqdm) plus
#     pytest and hypothesis, e.g. a venv made beforehand with
#         make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
#   * PYTHON=/path/to/python selects it; the default is .venv/bin/python of this repository if it exists,
#     else python3. The repository itself is put on PYTHONPATH, so it need not be installed.
#   * TEST_LIMIT, BENCH_LIMIT, CPU_LIMIT (seconds) and BATCHES, ITERS override the settings below.
#
# What it writes to $OUT: gpu_env.txt (nvidia-smi, versions), gpu_tests.txt (pytest's report),
# gpu_speed.json (iterations per second on CUDA) and gpu_speed_cpu.json (the same at small batches on one CPU
# thread, for the speed-up). The exit status is non-zero if a test failed or a step ran out of time.
#
# Time budget (one H200), estimated from operation counts measured on the CPU (no GPU was at hand): at these sizes
# every GPU operation is launch-bound, 10-40 us of host time each whatever the batch up to 10^4 paths (the largest
# product is 10^4 x 74 x 64), so time = operations x 20-40 us.
#   * tests (tests/test_cuda.py, -m cuda): 1.15 million torch calls in all (0.55 M the adjoint LQR solve, 0.44 M
#     the adjoint-matching one, 0.17 M everything else), about 25-45 s, plus start-up and the first CUDA
#     initialisation (a few s); hard limit 120 s.
#   * CUDA benchmark: PIS-TB on funnel10 runs about 4800 aten operations per iteration (100 steps), DDS-LV on
#     manywell32 about 3600, so 0.05-0.2 s per iteration; 2 configurations x 4 batch sizes x (3 warm-up + 20
#     timed) iterations = 184 iterations, about 10-40 s; hard limit 120 s.
#   * CPU reference: batches 300 and 1000, 1 warm-up + 3 timed iterations (0.5 and 1.3-1.8 s each on one thread
#     here), about 20 s; hard limit 45 s.
# Worst case with every limit reached: 120 + 120 + 45 s plus start-up, under 5 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-.}"
mkdir -p "$OUT"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"   # the package's one-thread default; the CPU figures are per thread
TEST_LIMIT="${TEST_LIMIT:-120}"
BENCH_LIMIT="${BENCH_LIMIT:-120}"
CPU_LIMIT="${CPU_LIMIT:-45}"
BATCHES="${BATCHES:-300 1000 3000 10000}"
ITERS="${ITERS:-20}"
status=0

echo "== environment (python: $PYTHON)" | tee "$OUT/gpu_env.txt"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi 2>&1 | tee -a "$OUT/gpu_env.txt" || true
else
    echo "nvidia-smi not found" | tee -a "$OUT/gpu_env.txt"
fi
"$PYTHON" - <<'PY' 2>&1 | tee -a "$OUT/gpu_env.txt"
import sys
import torch
print(f"python {sys.version.split()[0]}; torch {torch.__version__}; CUDA build {torch.version.cuda}; "
      f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
print(f"CUDA available: {torch.cuda.is_available()}; devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2 ** 30:.0f} GiB, compute capability {p.major}.{p.minor}")
print(f"float32 matmul precision: {torch.get_float32_matmul_precision()}")
import controlsamp
print(f"controlsamp from {controlsamp.__file__}")
if not torch.cuda.is_available():
    sys.exit("no CUDA device is usable from this torch: install a CUDA build of torch (see the top of this script)")
PY

echo "== CUDA tests (limit $TEST_LIMIT s)"
timeout "$TEST_LIMIT" "$PYTHON" -m pytest -p no:xdist -p no:cacheprovider -m cuda \
    tests/test_cuda.py tests/test_langevin_optim.py -q -rfEs --durations=15 2>&1 | tee "$OUT/gpu_tests.txt" || status=$?
if [[ $status -ne 0 ]]; then echo "!! the CUDA tests failed or timed out (status $status)"; fi

echo "== training speed on CUDA (limit $BENCH_LIMIT s)"
# shellcheck disable=SC2086  # BATCHES is a list of numbers
timeout "$BENCH_LIMIT" "$PYTHON" benchmarks/gpu_speed.py --device cuda --iters "$ITERS" --warmup 3 \
    --batches $BATCHES --out "$OUT/gpu_speed.json" || { rc=$?; echo "!! CUDA benchmark: status $rc"; status=$rc; }

echo "== training speed on one CPU thread, for the speed-up (limit $CPU_LIMIT s)"
timeout "$CPU_LIMIT" "$PYTHON" benchmarks/gpu_speed.py --device cpu --iters 3 --warmup 1 --batches 300 1000 \
    --out "$OUT/gpu_speed_cpu.json" || { rc=$?; echo "!! CPU benchmark: status $rc"; status=$rc; }

"$PYTHON" - "$OUT/gpu_speed.json" "$OUT/gpu_speed_cpu.json" <<'PY' || true
import json, sys
try:
    gpu, cpu = (json.load(open(p))["results"] for p in sys.argv[1:3])
except (OSError, KeyError, ValueError) as exc:
    sys.exit(f"no speed-up table ({exc})")
for c in cpu:
    for g in gpu:
        if g["config"] == c["config"] and g["batch"] == c["batch"]:
            print(f"speed-up {c['config']:18s} batch {c['batch']:5d}: {g['it_per_s'] / c['it_per_s']:6.1f}x "
                  f"({g['it_per_s']:.1f} against {c['it_per_s']:.2f} it/s)")
PY

if [[ $status -eq 0 ]]; then echo "== GPU check passed"; else echo "== GPU check FAILED (status $status)"; fi
exit "$status"
