"""Gorgonia's "OneMil" benchmark: sigmoid and tanh over 1,000,000 elements.

    python benchmarks/bench_onemil.py            # full run
    python benchmarks/bench_onemil.py --quick    # fewer repeats

Rows: numpy (the no-framework reference: 1/(1+exp(-x)) and np.tanh), exprvm's
C backend (calling into a preallocated output), and, when importable, torch
and jax.jit.  On a GPU also exprvm CUDA with data resident on the device,
CuPy, and the host -> device -> host round trip separately.  Each cell is
the median of many timed calls; the ratio is numpy's median over the row's
(> 1 is faster than numpy).  Timings are for this machine and this run only.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from exprvm import kernels

N = 1_000_000


def median_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def numpy_rows(x):
    return {"sigmoid": lambda: 1 / (1 + np.exp(-x)), "tanh": lambda: np.tanh(x)}


def exprvm_rows(x, backend):
    out = np.empty_like(x)
    rows = {}
    for op in ("sigmoid", "tanh"):
        fn = kernels.unary(op, x.dtype, backend)
        rows[op] = lambda fn=fn: fn(x, out)
    return rows


def torch_rows(x):
    try:
        import torch
    except ImportError:
        return None
    t = torch.from_numpy(x)
    return {"sigmoid": lambda: torch.sigmoid(t), "tanh": lambda: torch.tanh(t)}


def jax_rows(x):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    xj = jax.device_put(x, jax.devices("cpu")[0])
    sig, tanh = jax.jit(jax.nn.sigmoid), jax.jit(jnp.tanh)
    return {"sigmoid": lambda: sig(xj).block_until_ready(), "tanh": lambda: tanh(xj).block_until_ready()}


def cuda_rows(x):
    """exprvm CUDA resident, CuPy resident, and exprvm's full round trip."""
    import exprvm.cuda as cuda
    if not cuda.is_available():
        return {}
    dx, dout = cuda.to_device(x), cuda.empty(x.shape, x.dtype)
    rows = {}
    resident = {}
    for op in ("sigmoid", "tanh"):
        fn = kernels.unary(op, x.dtype, "cuda")
        resident[op] = lambda fn=fn: (fn(dx, dout), cuda.synchronize())
    rows["exprvm cuda (resident)"] = resident

    def round_trip(op):
        fn = kernels.unary(op, x.dtype, "cuda")

        def run():
            with cuda.tidy():
                fn(cuda.to_device(x), dout).numpy()
        return run
    rows["exprvm cuda (h->d->h)"] = {op: round_trip(op) for op in ("sigmoid", "tanh")}
    try:
        import cupy
        cx = cupy.asarray(x)
        sync = cupy.cuda.Device().synchronize
        rows["cupy (resident)"] = {"sigmoid": lambda: (1 / (1 + cupy.exp(-cx)), sync()),
                                   "tanh": lambda: (cupy.tanh(cx), sync())}
    except ImportError:
        pass
    return rows


def rows_for(impl, x):
    if impl == "numpy":
        return {"numpy": numpy_rows(x)}
    if impl == "exprvm c":
        return {"exprvm c": exprvm_rows(x, "c")} if kernels.backends()["c"][0] else {}
    if impl == "cuda":
        return cuda_rows(x)
    got = (torch_rows if impl == "torch" else jax_rows)(x)
    return {impl: got} if got is not None else {}


def measure(impl, dtype, repeats):
    """{row name: {op: median ms}} for one implementation, in this process."""
    x = np.random.default_rng(0).standard_normal(N).astype(dtype)
    return {name: {op: median_ms(fn, repeats) for op, fn in fns.items()}
            for name, fns in rows_for(impl, x).items()}


def measure_isolated(impl, dtype, repeats):
    # NOTE: one process per implementation.  torch, jax and exprvm each keep
    # worker threads that spin for a while after a parallel region; on a
    # small machine a rival's spinning workers slow the next row by 10x.
    cmd = [sys.executable, __file__, "--child", impl, np.dtype(dtype).name, str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  ({impl} {np.dtype(dtype).name} failed: {proc.stderr.strip().splitlines()[-1:]})")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 repeats instead of 200")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "DTYPE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, dtype, repeats = args.child
        print(json.dumps(measure(impl, np.dtype(dtype), int(repeats))))
        return
    repeats = 20 if args.quick else 200
    print(f"OneMil: {N:,} elements, median of {repeats} calls, ratio = numpy / row")
    print(f"exprvm backends: { {k: v[0] for k, v in kernels.backends().items()} }")
    print(f"{'dtype':8} {'implementation':26} {'sigmoid ms':>11} {'ratio':>6} {'tanh ms':>9} {'ratio':>6}")
    for dtype in (np.float32, np.float64):
        results = {}
        for impl in ("numpy", "exprvm c", "torch", "jax.jit", "cuda"):
            results.update(measure_isolated(impl, dtype, repeats))
        base = results["numpy"]
        for name, ms in results.items():
            print(f"{np.dtype(dtype).name:8} {name:26} {ms['sigmoid']:11.3f} {base['sigmoid'] / ms['sigmoid']:6.1f}"
                  f" {ms['tanh']:9.3f} {base['tanh'] / ms['tanh']:6.1f}")


if __name__ == "__main__":
    main()
