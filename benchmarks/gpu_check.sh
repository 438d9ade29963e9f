#!/usr/bin/env bash
# The GPU checks in one run, for a machine with an NVIDIA GPU and driver: the CUDA
# tests (pytest -m cuda), the kernel tests, and bench_onemil.py's device rows (exprvm
# CUDA resident and host->device->host, CuPy when installed).
#
#   bash benchmarks/gpu_check.sh --wheels   # on a machine with pip access: put the
#                                           # wheels a bare GPU image may lack in .whl/
#   bash benchmarks/gpu_check.sh            # on the GPU machine (log in $OUT/ if set)
#
# Environment: PY (default python3), PYVER (the GPU machine's Python for --wheels,
# default 3.12). The C extension is built in place for that machine's Python.
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

log=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/exprvm-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/exprvm-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
status=0
step() { echo; echo "== $*"; "$@" || status=1; }

step nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step "$PY" setup.py -q build_ext --inplace
step "$PY" -m exprvm.kernels.build_cuda
step "$PY" -c "import exprvm as ev; print(ev.backends())"
step "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/
step "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_c.py tests/test_kernels_cuda.py \
    tests/test_kernel_reference.py tests/test_ops_table.py tests/test_tape.py
step "$PY" benchmarks/bench_onemil.py
echo; echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED)"
exit $status
