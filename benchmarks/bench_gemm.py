"""exprvm's float32 matrix product (csrc/ev_gemm.c) against numpy's matmul, bound as a
compiled program binds them (buffers fixed, out= given), over the shapes exprvm's
models run: a recurrent step's h @ W, the weight gradients summed over all steps, the
one-hot input projection, an MLP's layers, and small ones near the TapeMachine's
threshold (compiler/lowering/linalg.py: MIN_ROWS, MIN_WORK).

    python benchmarks/bench_gemm.py            # numpy on 1 thread, then 2; exprvm's on 1
    python benchmarks/bench_gemm.py --smoke    # tiny rounds: checks that it runs

Medians of --rounds rounds (numpy and exprvm alternating); GFLOP/s and the ratio exprvm / numpy of one run. Never run
this while other work loads the machine.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from exprvm.compiler import threads  # noqa: E402
from exprvm.kernels import gemm  # noqa: E402

SHAPES = [  # (m, k, n, what)
    (32, 128, 512, "LSTM step h @ W_h, batch 32"),
    (800, 128, 65, "output layer over 25 steps x 32"),
    (128, 800, 512, "LSTM weight gradient, 25 steps x 32 (h^T @ g)"),
    (800, 65, 512, "one-hot input projection"),
    (64, 784, 128, "MLP layer 1, batch 64"),
    (784, 64, 128, "MLP weight gradient (x^T @ g)"),
    (64, 128, 10, "MLP head"),
    (8, 128, 128, "8 rows"),
    (16, 64, 128, "a small product"),
]


def medians_us(fns, rounds, inner):
    """Median time of each of fns; the rounds alternate between them (A/B pairs), so
    that a thread pool still spinning or a clock change hits both alike."""
    for fn in fns:
        for _ in range(3):
            fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            ts.append((time.perf_counter() - t0) / inner)
    return [statistics.median(ts) * 1e6 for ts in times]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    a = ap.parse_args(argv)
    rounds, inner = (2, 1) if a.smoke else (a.rounds or 21, 10)
    if not gemm.available():
        print("exprvm's C product is not built here")
        return
    # NOTE: measured on every machine, whatever the gate (gemm.preferred) chose: its
    # figures on both kinds of CPU are what the gate is decided from
    print(f"exprvm's C product built for {'512' if gemm.wide() else 'less than 512'}-bit vectors; "
          f"the TapeMachine {'uses' if gemm.preferred() else 'does not use'} it here")
    ctl = threads.blas_control()
    rng = np.random.default_rng(0)
    for n_threads in (1, 2):
        if ctl is not None:
            ctl.set(n_threads)
        print(f"\nnumpy's BLAS on {n_threads} thread(s), exprvm's product on 1; medians of {rounds} rounds"
              + (" (SMOKE)" if a.smoke else ""))
        print(f"{'m x k x n':>16s} {'numpy us':>9s} {'GF/s':>6s} {'exprvm us':>9s} {'GF/s':>6s} {'ratio':>6s}  what")
        for m, k, n, what in SHAPES:
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((k, n)).astype(np.float32)
            if "^T" in what:            # the gradients multiply a transposed view, as the tape does
                x = np.ascontiguousarray(x.T).T
            out, out2 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
            work = np.empty(gemm.work_shape(), np.float32)
            fn, args = gemm.bind(x, w, out2, work, "bench")
            fn(*args)
            np.testing.assert_allclose(out2, x @ w, rtol=1e-4, atol=1e-3)
            t_np, t_ev = medians_us([lambda: np.matmul(x, w, out=out), lambda: fn(*args)], rounds, inner)
            gf = 2 * m * k * n / 1e3
            print(f"{f'{m}x{k}x{n}':>16s} {t_np:9.1f} {gf / t_np:6.0f} {t_ev:9.1f} {gf / t_ev:6.0f} "
                  f"{t_ev / t_np:5.2f}x  {what}")


if __name__ == "__main__":
    main()
