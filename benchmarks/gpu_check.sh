#!/usr/bin/env bash
# Every GPU check of exprvm in one run, for a machine with an NVIDIA GPU and driver
# (about 4 minutes on an H200; every step has its own time limit):
#
#   1. the device: nvidia-smi (name, driver, memory)
#   2. builds: the C extension for this Python, the CUDA library for this GPU (nvcc)
#   3. what exprvm sees: ev.backends(), cuBLAS found and a handle made
#   4. tests: every `cuda`-marked test (real kernels and cuBLAS against numpy, whole
#      training steps against the host, device memory before/after), then the
#      device tests' host-twin halves
#   5. figures (benchmarks/bench_gpu.py): OneMil sigmoid/tanh vs CuPy, the LSTM step
#      (hidden 512, batch 128, seq 50) and the MLP step vs PyTorch CUDA eager, each
#      replayed as one CUDA graph and launch by launch, the LSTM step at batch 1 both
#      ways, device memory after 100 and 10,000 steps
#   6. the examples: examples/mlp.py --device cuda, examples/char_rnn.py --device cuda
#
#   bash benchmarks/gpu_check.sh --wheels   # on a machine with pip access: put the wheels
#                                           # a bare GPU image lacks (cffi, pycparser,
#                                           # graphviz) in .whl/, to carry with the tree
#   bash benchmarks/gpu_check.sh            # on the GPU machine; log and JSON in $OUT/ if set
#
# The GPU machine of this workplace has Python 3.12, nvcc 13.0, CuPy for CUDA 13, PyTorch
# and the nvidia-cublas wheel, and can fetch nothing: carry .whl/ with the tree.
# Environment: PY (default python3), PYVER (the GPU machine's Python for --wheels,
# default 3.12), STEPS (char_rnn example steps, default 200).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

if [ "${1:-}" = "--wheels" ]; then
    # NOTE: cffi is compiled, so its wheel must match the GPU machine's Python;
    # pycparser and graphviz are pure Python.
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl cffi pycparser graphviz
fi

OUTDIR=${OUT:-/tmp}
log=$OUTDIR/gpu_check.log
exec > >(tee "$log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/exprvm-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/exprvm-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci EXPRVM_CACHE_DIR=${EXPRVM_CACHE_DIR:-/tmp/exprvm-cache}
status=0
failed=()
step() {   # step SECONDS NAME COMMAND...: run with a time limit, remember failures
    local limit=$1 name=$2; shift 2
    echo; echo "== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "-- $name: rc $rc in $((SECONDS - t0)) s"
    if [ $rc -ne 0 ]; then status=1; failed+=("$name (rc $rc)"); fi
}

step 30 device nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
step 120 "C extension" "$PY" setup.py -q build_ext --inplace
step 180 "CUDA library" "$PY" -m exprvm.kernels.build_cuda
step 60 backends "$PY" -c "
import exprvm as ev
from exprvm.device import cublas
print(ev.backends())
print('cuBLAS:', cublas.status())
print('device:', ev.cuda.device_info(0))"
step 300 "cuda tests" "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/
step 240 "twin tests" "$PY" -m pytest -q -p no:cacheprovider -x tests/test_cuda_build.py \
    tests/test_cuda_kernels.py tests/test_placement.py tests/test_cuda_train.py
step 300 figures "$PY" benchmarks/bench_gpu.py
step 120 "mlp example" "$PY" examples/mlp.py --device cuda --epochs 3
step 240 "char_rnn example" "$PY" examples/char_rnn.py --device cuda --cell lstm --hidden 512 \
    --batch 128 --seq 50 --steps "${STEPS:-200}" --print-every 50 --sample 200 --plot "" --svg "" \
    --out "$OUTDIR"
echo
if [ $status -eq 0 ]; then
    echo "gpu_check: all steps passed"
else
    echo "gpu_check: FAILED: ${failed[*]}"
fi
exit $status
