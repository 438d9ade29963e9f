"""Shared by the MPI scripts that tests/test_distributed.py runs under a real mpirun.

Each script writes what it found to OUT/rank<r>.json (one file per rank); the test
reads those files and asserts. The models are small so that a script runs in a
second or two.
"""
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import exprvm as ev  # noqa: E402

IN, HID, OUT = 4, 6, 3


class MLP(ev.nn.Module):
    """x (B, 4) -> tanh(Linear) -> Linear (B, 3): the model the equivalence runs train."""

    def __init__(self, dtype, seed):
        super().__init__("mlp")
        self.l1 = self.add(ev.nn.Linear(IN, HID, name="l1", dtype=dtype, seed=(seed, 1)))
        self.l2 = self.add(ev.nn.Linear(HID, OUT, name="l2", dtype=dtype, seed=(seed, 2)))

    def loss(self, g, rows, dtype):
        x = g.matrix("x", (rows, IN), dtype=dtype)
        y = g.matrix("y", (rows, OUT), dtype=dtype)
        return x, y, ev.nn.mse(self.l2(ev.tanh(self.l1(x))), y)


def train_until_a_rank_leaves(ctx, before_step):
    """Train the MLP with a TapeMachine whose tape all-reduces the gradients, calling
    before_step(step) ahead of every step; before_step is meant to end this rank or
    another one, so that finishing every step prints "not reached"."""
    model = MLP(np.float64, seed=0)
    g = ev.Graph()
    x, y, loss = model.loss(g, 4, np.float64)
    ev.grad(loss, model.nodes(g))
    m = ev.TapeMachine(g, outputs=[loss], comm=ctx)
    opt = ev.solvers.Adam(lr=0.01)
    X, Y = np.ones((4, 4)), np.zeros((4, 3))
    for step in range(1, 1000):
        before_step(step)
        m.run({x: X, y: Y})
        opt.step(model.collect_grads(g))
    print("not reached: every rank finished", flush=True)


def data(steps, batch, dtype):
    """Fixed inputs and targets (steps, batch, ...) for every rank alike."""
    rng = np.random.default_rng(123)
    X = rng.normal(size=(steps, batch, IN)).astype(dtype)
    noise = 0.1 * rng.normal(size=(steps, batch, OUT))
    Y = (np.sin(X @ rng.normal(size=(IN, OUT))) + noise).astype(dtype)
    return X, Y


def write(out, rank, result):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)


def rel_diff(params_a, params_b):
    """Worst over parameters of max |a - b| / max |b|."""
    worst = 0.0
    for a, b in zip(params_a, params_b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)))
    return worst
