"""Linear regression by gradient descent, in the style of Gorgonia's iris example.

Data are generated: four iris-like features (lengths and widths in cm) and a
target that is a known linear function of them plus noise, so the learned
weights can be compared with the true ones. The graph is built once and, where
exprvm has one, compiled once by the TapeMachine; each step runs it and lets
SGD update the weights in place.

    python examples/linear_regression.py
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402

FEATURES = ("sepal length", "sepal width", "petal length", "petal width")
MEANS = np.array([5.8, 3.1, 3.8, 1.2])
STDS = np.array([0.8, 0.4, 1.8, 0.8])
TRUE_W = np.array([0.9, -0.6, 1.5, -0.4])
TRUE_B = 0.5


def make_data(rng, n, noise):
    X = rng.normal(MEANS, STDS, (n, 4))
    y = X @ TRUE_W + TRUE_B + rng.normal(0.0, noise, n)
    return X, y[:, None]


def main(argv=None):
    p = argparse.ArgumentParser(description="Linear regression with known true weights")
    p.add_argument("--samples", type=int, default=150)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--machine", choices=["tape", "lisp"],
                   default="tape" if hasattr(ev, "TapeMachine") else "lisp")
    p.add_argument("--print-every", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="few steps, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.print_every = 30, 5

    rng = np.random.default_rng(args.seed)
    X, y = make_data(rng, args.samples, args.noise)
    # Unscaled features make gradient descent crawl along the widest one; the
    # learned weights are mapped back to the original units at the end.
    mu, sd = X.mean(0), X.std(0)

    g = ev.Graph("regression")
    x = g.tensor("x", (args.samples, 4))
    target = g.tensor("y", (args.samples, 1))
    model = ev.nn.Linear(4, 1, name="fit", dtype=np.float64, seed=args.seed)
    loss = ev.nn.mse(model(x), target)
    params = model.nodes(g)
    if args.machine == "tape":
        ev.grad(loss, params)
        m = ev.TapeMachine(g)
    else:
        m = ev.LispMachine(g, cost=loss)
    opt = ev.solvers.SGD(lr=args.lr)
    feeds = {x: (X - mu) / sd, target: y}

    losses = []
    for step in range(1, args.steps + 1):
        m.run(feeds)
        opt.step(params)
        losses.append(float(loss.value))
        if step % args.print_every == 0:
            print(f"step {step} loss {losses[-1]:.6f}")
    print(f"loss first {losses[0]:.6f} last {losses[-1]:.6f}")

    w = model.W.value[:, 0] / sd
    b = float(model.b.value[0] - np.dot(w, mu))
    print(f"{'':14s} {'true':>8s} {'learned':>8s}")
    for name, t, v in zip(FEATURES, TRUE_W, w):
        print(f"{name:14s} {t:8.3f} {v:8.3f}")
    print(f"{'bias':14s} {TRUE_B:8.3f} {b:8.3f}")
    print(f"noise variance {args.noise ** 2:.4f}; final MSE {losses[-1]:.4f} ({args.machine} machine)")


if __name__ == "__main__":
    main()
