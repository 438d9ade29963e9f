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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NOTE: before numpy: tiny products

import numpy as np  # noqa: E402

from common import ev  # noqa: E402

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
        a.hidden, a.batch, a.min_len, a.max_len, a.steps, a.print_every = 8, 16, 4, 8, 40, 10
    if not 2 <= a.min_len <= a.max_len:
        p.error("need 2 <= --min-len <= --max-len")
    return a


class Batches:
    """Batch i: (inputs (length or pad_to, batch, 2) float32 [value, marker], zero past its
    length; targets (batch, 1); the length), drawn from (seed, i) with a length of its own."""

    def __init__(self, args, pad=True, count=None, length=None, batch=None, seed=None):
        self.a, self.pad, self.count, self.length = args, pad, count or args.steps, length
        self.batch, self.seed = batch or args.batch, args.seed if seed is None else seed

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        a, b, rng = self.a, self.batch, np.random.default_rng((self.seed, i))
        n = self.length or int(rng.integers(a.min_len, a.max_len + 1))
        values, cols = rng.uniform(0.0, 1.0, (n, b)), np.arange(b)
        first, second = rng.integers(0, n // 2, b), rng.integers(n // 2, n, b)
        markers = np.zeros((n, b))
        markers[first, cols] = markers[second, cols] = 1.0
        x = np.zeros((a.max_len if self.pad else n, b, 2), np.float32)
        x[:n] = np.stack([values, markers], axis=-1)
        return x, (values[first, cols] + values[second, cols])[:, None].astype(np.float32), np.array(n)


class Adder(ev.nn.Module):
    def __init__(self, cell, hidden, seed):
        super().__init__("adder")
        self.rnn = self.add(ev.nn.StackedRNN(cell, 2, hidden, name=cell, seed=(seed, 0)))
        self.head = self.add(ev.nn.Linear(hidden, 1, name="head", seed=(seed, 1)))

    def loss(self, x, y, n=None):
        """MSE of the prediction after n steps of x (one ev.scan, n a node), or after all of
        x without n (unrolled: a graph for this length)."""
        if n is None:
            return ev.nn.mse(self.head(self.rnn.unroll(x)[0][-1]), y)
        return ev.nn.mse(self.head(self.rnn.sequence(x, length=n)[1][-1][0]), y)


def steps(model, machine):
    """The step: the padded graph, traced and compiled once (tape), or a fresh graph for
    each batch's own length (lisp)."""
    @ev.function
    def padded(x, y, n):
        loss = model.loss(x, y, n)
        ev.grad(loss, model)
        return loss

    def fresh(x, y, n):
        g = ev.Graph(f"adding T={int(n)}")
        xn, yn = g.tensor("x", x.shape, np.float32), g.tensor("y", y.shape, np.float32)
        return ev.LispMachine(g, cost=model.loss(xn, yn)).run({xn: x, yn: y})[0]
    return padded if machine == "tape" else fresh


def main(argv=None):
    args = parse_args(argv)
    model = Adder(args.cell, args.hidden, args.seed)
    how = ("TapeMachine, one program compiled once (ev.scan with a length node)" if args.machine == "tape"
           else "LispMachine, a fresh graph per batch")
    print(f"adding problem: {args.cell} hidden {args.hidden}, batch {args.batch}, "
          f"lengths {args.min_len}..{args.max_len}, {how}")
    step = steps(model, args.machine)
    if args.machine == "tape":
        print(f"compiled: {len(step.program_for(*Batches(args)[0]))} instructions")
    batches = ev.data.DataLoader(Batches(args, pad=args.machine == "tape"), batch_size=None)
    trainer = ev.train.Trainer(batches, step, optimizer=ev.solvers.Adam(model, lr=args.lr, clip_norm=1.0),
                               steps=args.steps)
    history = trainer.extend(ev.train.LogReport(trigger=(1, "steps")), name="history")
    trainer.extend(ev.train.LogReport(trigger=(args.print_every, "steps"), smooth=0.95,
                                      print="step {step} loss {loss_smoothed:.5f} ({elapsed:.0f} s)"))
    # NOTE: the garbage collector walks only what each step makes (the lisp machine drops a
    # graph a step: without the block, a collection of everything stalled a step in 100)
    with ev.steady_gc():
        trainer.run()
    losses, k = [e["loss"] for e in history.log], max(1, min(50, args.steps // 4))
    print(f"{trainer.step} steps in {trainer.elapsed:.1f} s ({1000 * trainer.elapsed / trainer.step:.1f} ms/step)")
    print(f"loss first {np.mean(losses[:k]):.5f} last {np.mean(losses[-k:]):.5f}")
    x, y, n = Batches(args, length=args.max_len, batch=512, seed=args.seed + 1)[0]     # a fresh test batch
    mse = float(ev.function(model.loss)(x, y, n))
    base = float(np.mean((y - 1.0) ** 2))
    verdict = "solved" if mse < SOLVED else "not solved"
    print(f"test MSE at T={args.max_len}: model {mse:.5f}, baseline (predict 1.0) {base:.5f}: "
          f"{verdict} (below {SOLVED} counts as solved)")
    return mse, base


if __name__ == "__main__":
    main()
