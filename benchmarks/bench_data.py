"""Does ev.data.DataLoader keep a training step fed? The digits convnet step
(examples/digits_convnet.py, batch 32, TapeMachine) reads its batches from a loader;
per step we time the wait for the next batch (the time `next()` takes) and the step.

    python benchmarks/bench_data.py [--epochs 3] [--smoke]

Rows: batches gathered from arrays by hand (numpy fancy indexing in the loop, the
no-loader limit); the loader over an ArrayDataset without and with prefetching; and a
dataset that builds every sample in Python (a per-sample __getitem__ plus collation,
the slow case prefetching is for), without and with prefetching. Medians over steps.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
import exprvm as ev  # noqa: E402
import digits_convnet as dc  # noqa: E402


class PerSample:
    """Samples made one at a time in Python (as a dataset that decodes files does)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = self.x[i].copy()
        img -= 0.0                  # stands for per-sample work (decoding, augmenting)
        return img, self.y[i]


class Step:
    """The example's training step: forward, backward (compiled once) and Adam."""

    def __init__(self, model):
        self.fb = ev.train.ModelStep(model, ev.nn.mean_cross_entropy)
        self.opt = ev.solvers.Adam(model, lr=3e-3)

    def step(self, xb, tb):
        self.fb(xb, tb)
        self.opt.step()


def by_hand(x, y, batch, seed):
    """The loop a user writes without a loader: one epoch of shuffled batches."""
    rng = np.random.default_rng(seed)

    def epoch():
        order = rng.permutation(len(x))
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            yield x[idx], y[idx]
    return epoch


def measure(trainer, make_epoch, epochs):
    waits, steps = [], []
    for _ in range(epochs):
        it = iter(make_epoch())
        while True:
            t0 = time.perf_counter()
            try:
                xb, tb = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            trainer.step(xb, tb)
            t2 = time.perf_counter()
            waits.append(t1 - t0)
            steps.append(t2 - t1)
    return len(steps), np.median(waits), np.median(steps), np.sum(waits) / np.sum(steps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--smoke", action="store_true", help="one epoch on a part of the data")
    a = p.parse_args(argv)
    epochs = 1 if a.smoke else a.epochs
    xtr, ytr, _, _ = dc.load(a.smoke)
    model = dc.convnet(0)
    trainer = Step(model)
    arrays = ev.data.ArrayDataset(xtr, ytr)
    slow = PerSample(xtr, ytr)

    def loader(ds, prefetch):
        lo = ev.data.DataLoader(ds, a.batch, shuffle=True, seed=0, drop_last=True, prefetch=prefetch)
        return lambda: lo

    rows = [("arrays by hand (no loader)", by_hand(xtr, ytr, a.batch, 0)),
            ("DataLoader(ArrayDataset), prefetch=0", loader(arrays, 0)),
            ("DataLoader(ArrayDataset), prefetch=2", loader(arrays, 2)),
            ("DataLoader(per-sample dataset), prefetch=0", loader(slow, 0)),
            ("DataLoader(per-sample dataset), prefetch=2", loader(slow, 2))]
    measure(trainer, rows[0][1], 1)                     # warm up the step
    ev.compiler.tiers.wait_all()                        # the step's fused program (its final tier)
    measure(trainer, rows[0][1], 1)                     # ... swapped in
    print(f"digits convnet step, batch {a.batch}, TapeMachine; {len(xtr)} images, {epochs} epochs; "
          "medians per step")
    print(f"{'batches from':45s} {'wait us':>9s} {'step us':>9s} {'wait/step':>10s}")
    counts = set()
    for name, make in rows:
        count, wait, step, share = measure(trainer, make, epochs)
        counts.add(count)
        print(f"{name:45s} {wait * 1e6:9.1f} {step * 1e6:9.1f} {share:9.2%}")
    if len(counts) != 1:
        raise SystemExit(f"the rows took different numbers of steps: {sorted(counts)}")


if __name__ == "__main__":
    main()
