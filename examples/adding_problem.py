"""The adding problem (a classic long-memory RNN benchmark) with sequences whose length
changes from batch to batch.

Each sequence step carries a value in [0, 1] and a marker; exactly two steps are
marked, one in each half, and the target is the sum of their values. Predicting the
constant 1.0 scores MSE = Var(a + b) = 2/12 = 0.167: a model below that has learnt to
find and add the marked values; the problem counts as solved below 0.01.

Two ways to train it:

  --machine tape (default)  ONE graph, compiled once: the inputs are padded to the
                            longest length and the recurrence is an ev.scan whose
                            length is a node fed with each batch's length, so every
                            batch runs the same program for as many steps as it has
  --machine lisp            a FRESH graph per batch, differentiated at run time by the
                            LispMachine (which replays a compiled program for lengths
                            it has met often)

    python examples/adding_problem.py                  # solves T=100 (about a minute)
    python examples/adding_problem.py --machine lisp --max-len 30 --steps 1500
"""
import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NOTE: tiny matmuls; see char_rnn.py

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402

SOLVED = 0.01


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="The adding problem with variable-length sequences")
    p.add_argument("--machine", choices=("tape", "lisp"), default="tape")
    p.add_argument("--cell", choices=sorted(ev.nn.CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--min-len", type=int, default=50)
    p.add_argument("--max-len", type=int, default=100)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-every", type=int, default=250)
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few steps, for tests")
    a = p.parse_args(argv)
    if a.smoke:
        a.hidden, a.batch, a.min_len, a.max_len = 8, 16, 4, 8
        a.steps, a.print_every = 40, 10
    if not 2 <= a.min_len <= a.max_len:
        p.error("need 2 <= --min-len <= --max-len")
    return a


def make_batch(rng, batch, length, pad_to=None):
    """Inputs (pad_to or length, batch, 2) float32 [value, marker], zero past `length`,
    and targets (batch, 1)."""
    values = rng.uniform(0.0, 1.0, (length, batch))
    half = length // 2
    first = rng.integers(0, half, batch)
    second = rng.integers(half, length, batch)
    markers = np.zeros((length, batch))
    cols = np.arange(batch)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = np.zeros((pad_to or length, batch, 2), np.float32)
    x[:length] = np.stack([values, markers], axis=-1)
    y = (values[first, cols] + values[second, cols])[:, None].astype(np.float32)
    return x, y


class Adder(ev.nn.Module):
    def __init__(self, cell, hidden, seed):
        super().__init__("adder")
        self.rnn = self.add(ev.nn.StackedRNN(cell, 2, hidden, name=cell, seed=(seed, 0)))
        self.head = self.add(ev.nn.Linear(hidden, 1, name="head", seed=(seed, 1)))

    def padded(self, max_len, batch):
        """One graph for every length up to max_len: (inputs, targets, length, loss)."""
        g = ev.Graph(f"adding T<={max_len}")
        x = g.tensor("x", (max_len, batch, 2), np.float32)
        y = g.tensor("y", (batch, 1), np.float32)
        n = g.scalar("length", dtype=np.int64)
        _, final = self.rnn.sequence(x, length=n)
        return x, y, n, ev.nn.mse(self.head(final[-1][0]), y)

    def fresh(self, length, batch):
        """A graph for one sequence length: (inputs, targets, loss)."""
        g = ev.Graph(f"adding T={length}")
        x = g.tensor("x", (length, batch, 2), np.float32)
        y = g.tensor("y", (batch, 1), np.float32)
        hs, _ = self.rnn.unroll(x)
        return x, y, ev.nn.mse(self.head(hs[-1]), y)


class TapeTrainer:
    """The padded graph, compiled once: one TapeMachine for every length."""

    def __init__(self, model, args):
        self.x, self.y, self.n, self.loss = model.padded(args.max_len, args.batch)
        self.g = self.x.graph
        self.params = model.nodes(self.g)
        ev.grad(self.loss, self.params)
        self.m = ev.TapeMachine(self.g, outputs=[self.loss])
        self.max_len = args.max_len

    def step(self, rng, batch, length):
        xs, ys = make_batch(rng, batch, length, self.max_len)
        self.m.run({self.x: xs, self.y: ys, self.n: np.array(length)})
        return float(self.loss.value), self.params


class LispTrainer:
    def __init__(self, model, args):
        self.model = model

    def step(self, rng, batch, length):
        xs, ys = make_batch(rng, batch, length)
        x, y, loss = self.model.fresh(length, batch)
        ev.LispMachine(x.graph, cost=loss).run({x: xs, y: ys})
        return float(loss.value), self.model.collect_grads(x.graph)


def evaluate(model, rng, batch, length):
    """(MSE of the model, MSE of the constant-1.0 baseline) on a fresh batch of `length`."""
    xs, ys = make_batch(rng, batch, length)
    x, y, loss = model.fresh(length, batch)
    ev.TapeMachine(x.graph, outputs=[loss]).run({x: xs, y: ys})
    return float(loss.value), float(np.mean((ys - 1.0) ** 2))


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    ev.init.seed(args.seed)
    model = Adder(args.cell, args.hidden, args.seed)
    opt = ev.solvers.Adam(lr=args.lr, clip_norm=1.0)
    how = ("TapeMachine, one program compiled once (ev.scan with a length node)" if args.machine == "tape"
           else "LispMachine, a fresh graph per batch")
    print(f"adding problem: {args.cell} hidden {args.hidden}, batch {args.batch}, "
          f"lengths {args.min_len}..{args.max_len}, {how}")
    start = time.perf_counter()
    trainer = TapeTrainer(model, args) if args.machine == "tape" else LispTrainer(model, args)
    if args.machine == "tape":
        print(f"compiled in {time.perf_counter() - start:.2f} s: {len(trainer.m.program)} instructions")
    losses, smooth = [], None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        length = int(rng.integers(args.min_len, args.max_len + 1))
        loss, grads = trainer.step(rng, args.batch, length)
        opt.step(grads)
        losses.append(loss)
        smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
        if step % args.print_every == 0:
            print(f"step {step} loss {smooth:.5f} (T={length}, {time.perf_counter() - start:.0f} s)")
    elapsed = time.perf_counter() - start
    k = max(1, min(50, len(losses) // 4))
    print(f"{args.steps} steps in {elapsed:.1f} s ({1000 * elapsed / args.steps:.1f} ms/step)")
    print(f"loss first {np.mean(losses[:k]):.5f} last {np.mean(losses[-k:]):.5f}")
    mse, base = evaluate(model, np.random.default_rng(args.seed + 1), 512, args.max_len)
    verdict = "solved" if mse < SOLVED else "not solved"
    print(f"test MSE at T={args.max_len}: model {mse:.5f}, baseline (predict 1.0) {base:.5f}: "
          f"{verdict} (below {SOLVED} counts as solved)")
    return mse, base


if __name__ == "__main__":
    main()
