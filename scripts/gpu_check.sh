#!/usr/bin/env bash
# GPU check (issue 14) for a machine with one CUDA GPU and no internet: the machine's own python3 (torch with CUDA,
# triton, pytest, lightning preinstalled; no venv, no pip). Runs the gpu-marked Triton kernel tests, the device
# matrix on cuda and the CUDA rows of `stnkit bench`, then prints a summary; under 8 minutes (each step has its own time limit; 450 s in all). Without CUDA it
# prints "no CUDA device" and exits 0. PYTHON overrides the interpreter; the benchmark's markdown and JSON go to
# $OUT (default /tmp/stnkit-gpu-check).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=src
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "no CUDA device"
    exit 0
fi

"$PY" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "|", torch.cuda.get_device_name())'

declare -a names=() codes=()
step() {
    local name="$1" limit="$2"
    shift 2
    echo "=== $name"
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    names+=("$name ($((SECONDS - start)) s)")
    codes+=("$rc")
}

step "triton kernels (pytest -m gpu tests/kernels)" 110 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/kernels
step "device matrix (--device cuda)" 80 "$PY" -m pytest -q -p no:cacheprovider --device cuda tests/test_device_matrix.py
RESULTS="${OUT:-/tmp/stnkit-gpu-check}"
mkdir -p "$RESULTS"
step "stnkit bench --device cuda" 220 "$PY" -m stnkit.bench --device cuda --sections warps --budget 0.5 \
    --json "$RESULTS/bench_cuda.json" --markdown "$RESULTS/bench_cuda.md"
step "distortions generated on cuda vs cpu (samples/s, batch 256)" 40 "$PY" -c '
import torch
from stnkit.data.distorted_mnist import measure_rate
digits = torch.randint(0, 256, (2048, 28, 28), dtype=torch.uint8)
for kind in ("rts", "p", "e", "tc"):
    cpu, cuda = (measure_rate(digits, kind, 256, 10, device=d) for d in ("cpu", "cuda"))
    print(f"{kind}: cpu {cpu:,.0f}/s, cuda {cuda:,.0f}/s ({cuda / cpu:.1f}x)")
'

echo "=== summary"
status=0
for i in "${!names[@]}"; do
    if [ "${codes[$i]}" -eq 0 ]; then result=ok; else result="FAILED (exit ${codes[$i]})"; status=1; fi
    echo "${names[$i]}: $result"
done
exit $status
