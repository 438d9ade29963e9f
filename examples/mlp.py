"""A ReLU MLP classifying handwritten digits, the whole training step compiled once.

Data: scikit-learn's 1,797 8x8 digits (shipped inside the package, no download);
without scikit-learn, a synthetic 10-class problem of the same shape. ev.train.Trainer
drives the step (traced once and compiled by the TapeMachine) over a shuffled
ev.data.DataLoader; with --device cuda every instruction of the step runs on the GPU
(matmuls on cuBLAS), the parameters stay there between steps, and Adam updates them
there: a step moves its batch in and its loss out.

    python examples/mlp.py                    # on the CPU
    python examples/mlp.py --device cuda      # on a GPU (needs nvcc and a driver)
    python examples/mlp.py --device twin      # the CUDA code path on the CPU's host twin
                                              # (slow: checks the device program anywhere)
"""
import argparse

import numpy as np

from common import ev, on_device, to_host

F32 = np.float32


def load_data(seed):
    """(X_train, y_train, X_test, y_test, source): standardized float32 features, int64 labels."""
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        X, y, source = d.data.astype(np.float64), d.target.astype(np.int64), "scikit-learn digits"
    except ImportError:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 10, 1797)
        X, source = rng.normal(0, 3, (10, 64))[y] + rng.normal(0, 2, (1797, 64)), "synthetic (no scikit-learn)"
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order], y[order]
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    cut = int(0.8 * len(X))
    return X[:cut].astype(F32), y[:cut], X[cut:].astype(F32), y[cut:], source


def mlp(inputs, hidden, classes, seed):
    """The model: Linear, ReLU, Linear (float32)."""
    return ev.nn.Sequential(ev.nn.Linear(inputs, hidden, name="fc0", dtype=F32, seed=(seed, 0)), ev.relu,
                            ev.nn.Linear(hidden, classes, name="fc1", dtype=F32, seed=(seed, 1)), name="mlp")


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
    a.epochs = 2 if a.smoke else a.epochs
    return a


def main(argv=None):
    a = parse(argv)
    X, y, Xt, yt, source = load_data(a.seed)
    model = mlp(X.shape[1], a.hidden, 10, a.seed)
    train = ev.data.DataLoader(ev.data.ArrayDataset(X, y), a.batch, shuffle=True, seed=a.seed, drop_last=True)
    test = ev.data.DataLoader(ev.data.ArrayDataset(Xt, yt), batch_size=len(Xt))
    device, where = on_device(a.device)
    trainer = ev.train.Trainer(train, model=model, loss=ev.nn.mean_cross_entropy,
                               optimizer=ev.solvers.Adam(model, lr=a.lr), device=device, epochs=a.epochs)
    trainer.extend(ev.train.Evaluator(test, prefix="test"))
    trainer.extend(ev.train.LogReport(print="epoch {epoch} loss {loss:.4f} test accuracy {test/accuracy:.3f}"))
    print(f"data: {source}, {len(X)} train / {len(Xt)} test; device {a.device}")
    with where:
        try:
            trainer.run()
        except ev.BackendError as e:
            raise SystemExit(f"--device {a.device}: {e}") from None
        to_host(device)
    program = next(iter(trainer.step_fn.programs.values()))
    moves = [i.op for i in program.instrs if i.op in ("to_device", "to_host")]
    print(f"trained in {trainer.elapsed:.1f} s; the step: {len(program)} instructions, transfers: {moves or 'none'}")
    return trainer.observation["test/accuracy"]


if __name__ == "__main__":
    main()
