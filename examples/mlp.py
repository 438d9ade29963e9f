"""A ReLU MLP classifying handwritten digits, the whole training step compiled once.

Data: scikit-learn's 1,797 8x8 digits (shipped inside the package, no download);
without scikit-learn, a synthetic 10-class problem of the same shape. The graph is
built once and compiled by the TapeMachine; with --device cuda every instruction of
the step runs on the GPU (matmuls on cuBLAS), the parameters stay there between
steps, and Adam updates them there: a step moves its batch in and its loss out.

    python examples/mlp.py                    # on the CPU
    python examples/mlp.py --device cuda      # on a GPU (needs nvcc and a driver)
    python examples/mlp.py --device twin      # the CUDA code path on the CPU's host twin
                                              # (slow: checks the device program anywhere)
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402
from exprvm.train import device as device_params  # noqa: E402

F32 = np.float32


def load_data(seed):
    """(X_train, y_train, X_test, y_test, source): standardized float32 features, int64 labels."""
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        X, y, source = d.data.astype(np.float64), d.target.astype(np.int64), "scikit-learn digits"
    except ImportError:
        rng = np.random.default_rng(seed)
        centers = rng.normal(0, 3, (10, 64))
        y = rng.integers(0, 10, 1797)
        X, source = centers[y] + rng.normal(0, 2, (1797, 64)), "synthetic (no scikit-learn)"
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order], y[order]
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    cut = int(0.8 * len(X))
    return X[:cut].astype(F32), y[:cut], X[cut:].astype(F32), y[cut:], source


class MLP(ev.nn.Module):
    def __init__(self, sizes, seed):
        super().__init__("mlp")
        self.layers = [self.add(ev.nn.Linear(a, b, name=f"fc{i}", dtype=F32, seed=(seed, i)))
                       for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = ev.relu(x)
        return x


def accuracy(model, X, y):
    """Classification accuracy of the model's host parameter arrays on (X, y)."""
    g = ev.Graph("eval")
    x = g.matrix("x", X.shape, dtype=F32)
    logits = model(x)
    ev.TapeMachine(g, [logits]).run({x: X})
    return float(np.mean(np.argmax(logits.value, axis=1) == y))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda", "twin"], default="cpu")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="two epochs, for tests")
    a = p.parse_args(argv)
    if a.smoke:
        a.epochs = 2
    return a


def main(argv=None):
    a = parse(argv)
    X, y, Xt, yt, source = load_data(a.seed)
    model = MLP((X.shape[1], a.hidden, 10), a.seed)
    g = ev.Graph("mlp step")
    x = g.matrix("x", (a.batch, X.shape[1]), dtype=F32)
    t = g.tensor("t", (a.batch,), np.int64)
    loss = ev.nn.mean_cross_entropy(model(x), t)
    ev.grad(loss, model.nodes(g))
    place = "cuda" if a.device in ("cuda", "twin") else None
    if a.device == "twin":
        from exprvm.device import twin
        where = twin.use()
    else:
        where = contextlib.nullcontext()
    with where:
        try:
            m = ev.TapeMachine(g, [loss], device=place)
        except ev.BackendError as e:
            raise SystemExit(f"--device {a.device}: {e}") from None
        moves = [i.op for i in m.program.instrs if i.op in ("to_device", "to_host")]
        print(f"data: {source}, {len(X)} train / {len(Xt)} test; device {a.device}; "
              f"{len(m.program)} instructions, transfers: {moves or 'none'}")
        opt = ev.solvers.Adam(lr=a.lr)
        rng = np.random.default_rng(a.seed)
        start = time.perf_counter()
        for epoch in range(a.epochs):
            order = rng.permutation(len(X))
            total, n = 0.0, 0
            for k in range(0, len(X) - a.batch + 1, a.batch):
                rows = order[k:k + a.batch]
                m.run({x: X[rows], t: y[rows]})
                opt.step(model.collect_grads(g))
                total += float(np.asarray(loss.value))
                n += 1
            device_params.to_host()     # the host arrays get the device values (none on the CPU)
            print(f"epoch {epoch + 1} loss {total / n:.4f} test accuracy {accuracy(model, Xt, yt):.3f}")
        m.close()
    print(f"trained in {time.perf_counter() - start:.1f} s")
    return accuracy(model, Xt, yt)


if __name__ == "__main__":
    main()
