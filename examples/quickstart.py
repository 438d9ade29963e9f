"""A tour of exprvm's API, runnable: build a graph, differentiate it, run it on
both machines, check the gradients, take a few Adam steps, draw the graph.

    python examples/quickstart.py [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="exprvm API tour")
    p.add_argument("--out", default="out", help="folder for the SVG drawing")
    p.add_argument("--steps", type=int, default=5, help="Adam steps to take")
    p.add_argument("--smoke", action="store_true", help="for tests (the tour is already small)")
    args = p.parse_args(argv)

    # 1. A graph: parameters (init=), an input (fed at run time), ops.
    g = ev.Graph("quickstart")
    f32 = np.float32
    W = g.matrix("W", (3, 4), init=ev.init.glorot_normal(seed=0), dtype=f32)
    b = g.vector("b", 3, init=ev.init.zeros(), dtype=f32)
    v = g.vector("v", 4, dtype=f32)
    y = ev.tanh(W @ v + b)
    cost = ev.sum(y * y)
    print("graph:", g)

    # 2. Symbolic gradients: new nodes in the same graph.
    gW, gb = ev.grad(cost, [W, b])
    print("dcost/dW is node", gW.label, gW.shape, "- role", gW.role)

    # 3. Compile once and run (TapeMachine), or walk the graph (LispMachine).
    feeds = {v: np.array([1.0, -0.5, 0.25, 2.0], f32)}
    if hasattr(ev, "TapeMachine"):
        m = ev.TapeMachine(g)
        m.run(feeds)
        print(m.program)
    else:
        m = ev.LispMachine(g, cost=cost, outputs=[gW, gb])
        m.run(feeds)
        print("(no TapeMachine in this exprvm: ran the LispMachine)")
    print(f"cost {float(cost.value):.6f}; |dW| {np.abs(gW.value).sum():.6f}")

    # 4. The LispMachine's run-time autodiff agrees with the symbolic gradient.
    lm = ev.LispMachine(g, cost=cost)
    lm.run(feeds)
    print("autodiff == symbolic:", bool(np.allclose(W.grad, gW.value, rtol=1e-5)))

    # 5. Finite differences (float64): True, or ev.GradCheckError naming the worst element.
    W0 = W.value.astype(np.float64)
    print("check_grad:", ev.check_grad(lambda W, x: ev.sum(ev.tanh(W @ x) ** 2), [W0, feeds[v]]))

    # 6. A few Adam steps: the solver updates W.value and b.value in place.
    opt = ev.solvers.Adam(lr=0.05)
    losses = []
    for step in range(1, args.steps + 1):
        lm.run(feeds)
        losses.append(float(cost.value))
        print(f"step {step} loss {losses[-1]:.6f}")
        opt.step([W, b])
    print(f"loss first {losses[0]:.6f} last {losses[-1]:.6f}")

    # 7. Blocks that own their parameters: reuse them in any number of graphs.
    cell = ev.nn.LSTMCell(4, 3, name="lstm", seed=0)
    for batch in (2, 5):
        g2 = ev.Graph(f"batch {batch}")
        x = g2.tensor("x", (batch, 4), f32)
        h, (h, c) = cell(x)
        print(f"{cell} in a graph of batch {batch}: h {h.shape}, parameters {[n.name for n in cell.nodes(g2)]}")

    # 8. Draw the graph with its gradient nodes.
    if hasattr(ev, "render"):
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "quickstart.svg")
        ev.render(g, path)
        print("wrote", path)
    else:
        print("(no ev.render in this exprvm: not drawing)")


if __name__ == "__main__":
    main()
