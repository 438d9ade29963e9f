"""The adding problem (a classic long-memory RNN benchmark) on the LispMachine.

Each sequence step carries a value in [0, 1] and a marker; exactly two steps
are marked, one in each half, and the target is the sum of their values. The
sequence length changes from batch to batch, so every batch builds a FRESH
graph and the LispMachine differentiates it at run time; the model's
parameters (ev.nn blocks) persist across those graphs.

Predicting the constant 1.0 scores MSE = Var(a + b) = 2/12 = 0.167: a model
below that has learnt to find and add the marked values.

    python examples/adding_problem.py                  # ~1500 steps, lengths 10..30
"""
import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NOTE: tiny matmuls; see char_rnn.py

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="The adding problem with variable-length sequences")
    p.add_argument("--cell", choices=sorted(ev.nn.CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--min-len", type=int, default=10)
    p.add_argument("--max-len", type=int, default=30)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-every", type=int, default=100)
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few steps, for tests")
    a = p.parse_args(argv)
    if a.smoke:
        a.hidden, a.batch, a.min_len, a.max_len = 8, 16, 4, 8
        a.steps, a.print_every = 40, 5
    if not 2 <= a.min_len <= a.max_len:
        p.error("need 2 <= --min-len <= --max-len")
    return a


def make_batch(rng, batch, length):
    """Inputs (length, batch, 2) float32 [value, marker] and targets (batch, 1)."""
    values = rng.uniform(0.0, 1.0, (length, batch))
    half = length // 2
    first = rng.integers(0, half, batch)
    second = rng.integers(half, length, batch)
    markers = np.zeros((length, batch))
    cols = np.arange(batch)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[first, cols] + values[second, cols])[:, None].astype(np.float32)
    return x, y


class Adder(ev.nn.Module):
    def __init__(self, cell, hidden, seed):
        super().__init__("adder")
        self.rnn = self.add(ev.nn.StackedRNN(cell, 2, hidden, name=cell, seed=(seed, 0)))
        self.head = self.add(ev.nn.Linear(hidden, 1, name="head", seed=(seed, 1)))

    def graph(self, length, batch):
        """A fresh graph for this sequence length: (inputs, targets, prediction, loss)."""
        g = ev.Graph(f"adding T={length}")
        x = g.tensor("x", (length, batch, 2), np.float32)
        y = g.tensor("y", (batch, 1), np.float32)
        hs, _ = self.rnn.unroll(x)
        pred = self.head(hs[-1])
        return x, y, pred, ev.nn.mse(pred, y)


def evaluate(model, rng, batch, lengths):
    """MSE of the model and of the constant-1.0 baseline on fresh batches of each length."""
    errs, base = [], []
    for length in lengths:
        xs, ys = make_batch(rng, batch, length)
        x, y, pred, loss = model.graph(length, batch)
        ev.LispMachine(x.graph, outputs=[loss]).run({x: xs, y: ys})
        errs.append(float(loss.value))
        base.append(float(np.mean((ys - 1.0) ** 2)))
    return float(np.mean(errs)), float(np.mean(base))


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    ev.init.seed(args.seed)
    model = Adder(args.cell, args.hidden, args.seed)
    opt = ev.solvers.Adam(lr=args.lr, clip_norm=1.0)
    print(f"adding problem: {args.cell} hidden {args.hidden}, batch {args.batch}, "
          f"lengths {args.min_len}..{args.max_len}, LispMachine, a fresh graph per batch")
    losses, smooth = [], None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        length = int(rng.integers(args.min_len, args.max_len + 1))
        xs, ys = make_batch(rng, args.batch, length)
        x, y, _, loss = model.graph(length, args.batch)
        ev.LispMachine(x.graph, cost=loss).run({x: xs, y: ys})
        opt.step(model.collect_grads(x.graph))
        losses.append(float(loss.value))
        smooth = losses[-1] if smooth is None else 0.95 * smooth + 0.05 * losses[-1]
        if step % args.print_every == 0:
            print(f"step {step} loss {smooth:.5f} (T={length}, {time.perf_counter() - start:.0f} s)")
    elapsed = time.perf_counter() - start
    k = max(1, min(50, len(losses) // 4))
    print(f"{args.steps} steps in {elapsed:.1f} s ({1000 * elapsed / args.steps:.1f} ms/step)")
    print(f"loss first {np.mean(losses[:k]):.5f} last {np.mean(losses[-k:]):.5f}")
    lengths = sorted({args.min_len, (args.min_len + args.max_len) // 2, args.max_len})
    mse, base = evaluate(model, np.random.default_rng(args.seed + 1), 256, lengths)
    print(f"test MSE over lengths {lengths}: model {mse:.5f}, baseline (predict 1.0) {base:.5f}")


if __name__ == "__main__":
    main()
