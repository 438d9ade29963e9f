"""Overheads around the kernels, in one run (medians; ratios to plain numpy):

  fed chain   50 x tanh(x * w_k) on 16 float32, x and the 50 w_k fed every run:
              numpy, the TapeMachine, jax.jit (when installed); and the cost of one feed
              (against the same chain with the w_k as parameters, x alone fed); a run's
              fixed cost (one instruction, one input: feeding, the results' checks and
              hand-out, the returned copy)
  walked      sigmoid and tanh on 10^6 float32 walked by the LispMachine (replay=False)
              against the TapeMachine's run and numpy's own formula

    python benchmarks/bench_overheads.py [--quick]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402
from timing import median_ms  # noqa: E402


def median_us(fn, number, repeat):
    return median_ms(fn, repeat, number, warmup=1) * 1e3


def chain(steps, n, fed):
    """The chain's graph, its output and its leaves: the w_k inputs (fed) or parameters."""
    rng = np.random.default_rng(0)
    g = ev.Graph()
    x = g.vector("x", n, np.float32)
    w0 = [rng.uniform(0.5, 1.0, n).astype(np.float32) for _ in range(steps)]
    ws = [g.vector(f"w{k}", n, np.float32, value=None if fed else w0[k]) for k in range(steps)]
    y = x
    for w in ws:
        y = ev.tanh(y * w)
    feeds = {x: rng.normal(size=n).astype(np.float32)}
    if fed:
        feeds.update(zip(ws, w0))
    return ev.TapeMachine(g, outputs=[y], fuse="sync"), y, x, ws, feeds


def fed_chain(repeat, steps=50, n=16):
    m, y, x, ws, feeds = chain(steps, n, fed=True)
    # the same program with the w_k as parameters: only x is fed
    m1, _, x1, _, feeds1 = chain(steps, n, fed=False)
    arrays = [feeds[w] for w in ws]
    x0 = feeds[x]

    def numpy_chain():
        v = x0
        for a in arrays:
            v = np.tanh(v * a)
        return v

    g = ev.Graph()
    x1 = g.vector("x", n, np.float32)
    tiny = ev.TapeMachine(g, outputs=[ev.sum(x1)], fuse="sync")
    tiny_feeds = {x1: feeds[x]}
    rows = {"numpy": median_us(numpy_chain, 200, repeat),
            "tape, one instruction": median_us(lambda: tiny.run(tiny_feeds), 200, repeat),
            "tape": median_us(lambda: m.run(feeds), 200, repeat),
            "tape, x fed": median_us(lambda: m1.run(feeds1), 200, repeat)}
    m.run(feeds)
    np.testing.assert_allclose(y.value, numpy_chain(), rtol=1e-4, atol=1e-6)
    try:
        import jax
        import jax.numpy as jnp
        f = jax.jit(lambda v, *a: _jax_chain(jnp, v, a))
        jx, ja = jnp.asarray(x0), [jnp.asarray(a) for a in arrays]
        rows["jax.jit"] = median_us(lambda: f(jx, *ja).block_until_ready(), 200, repeat)
    except ImportError:
        pass
    return rows, steps + 1


def _jax_chain(jnp, v, arrays):
    for a in arrays:
        v = jnp.tanh(v * a)
    return v


def walked(op, repeat, n=10**6):
    x0 = np.random.default_rng(1).normal(size=n).astype(np.float32)
    g = ev.Graph()
    x = g.vector("x", n, np.float32)
    y = ev.apply(op, x)
    lm = ev.LispMachine(g, outputs=[y], replay=False)
    tm = ev.TapeMachine(g, outputs=[y], fuse="sync")
    formula = {"sigmoid": lambda: 1 / (1 + np.exp(-x0)), "tanh": lambda: np.tanh(x0)}[op]
    return {"numpy": median_us(formula, 5, repeat), "lisp (walked)": median_us(lambda: lm.run({x: x0}), 5, repeat),
            "tape": median_us(lambda: tm.run({x: x0}), 5, repeat)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    repeat = 5 if args.quick else 15
    rows, inputs = fed_chain(repeat)
    base = rows["numpy"]
    print(f"fed chain (50 x tanh(x*w), 16 float32, {inputs} inputs fed per run), median of {repeat}:")
    for k, v in rows.items():
        print(f"  {k:<20} {v:8.1f} us   {v / base:5.2f}x numpy")
    # NOTE: every input must be fed: a feed's cost is the difference to the same chain
    # with its w_k as parameters (read in place), x alone fed.
    per_feed = (rows["tape"] - rows["tape, x fed"]) / (inputs - 1)
    print(f"  one feed             {per_feed:8.2f} us")
    for op in ("sigmoid", "tanh"):
        r = walked(op, repeat)
        print(f"{op} on 10^6 float32: " + ", ".join(f"{k} {v / 1e3:.3f} ms" for k, v in r.items())
              + f"; walked / tape {r['lisp (walked)'] / r['tape']:.2f}x")


if __name__ == "__main__":
    main()
