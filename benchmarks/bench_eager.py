"""The cost of an eager call (an ev function on arrays), which runs the op's shape rule
before numpy, against numpy's own call; and the LispMachine's backward walk, whose VJP
rules call ops eagerly. Ratios and medians within one run.

    python benchmarks/bench_eager.py
"""
import statistics
import time

import numpy as np

import exprvm as ev


def median_us(fn, n=2000, repeats=7):
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(runs)


def main():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    rows = [
        ("tanh", lambda: np.tanh(a), lambda: ev.tanh(a)),
        ("add", lambda: np.add(a, b), lambda: ev.add(a, b)),
        ("matmul", lambda: np.matmul(a, b), lambda: ev.matmul(a, b)),
        ("sum axis", lambda: np.sum(a, axis=1), lambda: ev.sum(a, axis=1)),
    ]
    print(f"{'op (16x16 float64)':<22}{'numpy us':>10}{'ev us':>10}{'ratio':>8}")
    for name, ref, ours in rows:
        t_np, t_ev = median_us(ref), median_us(ours)
        print(f"{name:<22}{t_np:>10.2f}{t_ev:>10.2f}{t_ev / t_np:>8.2f}")

    # a LispMachine walk (no replay): forward and the eager VJPs of a small MLP
    g = ev.Graph()
    x = g.matrix("x", (32, 20), value=rng.standard_normal((32, 20)))
    W1 = g.matrix("W1", (20, 64), value=rng.standard_normal((20, 64)) * 0.1)
    W2 = g.matrix("W2", (64, 10), value=rng.standard_normal((64, 10)) * 0.1)
    cost = ev.mean(ev.square(ev.tanh(x @ W1) @ W2))
    m = ev.LispMachine(g, cost=cost, replay=False)
    print(f"LispMachine walk, MLP 32x20x64x10: {median_us(m.run, n=200):.1f} us per run")


if __name__ == "__main__":
    main()
