"""Draw expression graphs and their symbolic gradients as SVG (graphviz).

    python examples/render_gradients.py --out out/

Writes, after one run so every node shows its value (and leaves their gradient):
  square.svg        y = x**2 and dy/dx = 2x, the classic first picture
  rnn_step.svg      one RNN step h1 = tanh(W x + U h0 + b), its cost and gradients
  rnn_step_w.svg    the same graph, only what lies within 2 edges of W
  rnn_unrolled.svg  the RNN unrolled 25 steps, repeated steps folded (collapse="site")
  program.svg       the RNN step compiled for the TapeMachine: its tape and buffer slots

How to read them: data flows upwards from the leaves (green; inputs filled light
yellow) to the cost (red). Gradient nodes sit in the blue "gradients" box and
flow downwards, so dW ends beside W; the dashed edge joins each gradient to its
node.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402

STEPS = 25


def square(out):
    g = ev.Graph("square")
    x = g.scalar("x")
    y = x * x
    ev.grad(y, x)
    # trace=True keeps every intermediate value on its node, so the picture shows them all.
    ev.TapeMachine(g, trace=True).run({x: 3.0})
    return ev.render(g, os.path.join(out, "square.svg"), title="y = x², dy/dx = 2x at x = 3")


def rnn_step_graph(steps, rng):
    g = ev.Graph("rnn")
    W = g.matrix("W", (4, 3), init=ev.init.glorot_normal(seed=0))
    U = g.matrix("U", (4, 4), init=ev.init.glorot_normal(seed=1))
    b = g.vector("b", 4, init=ev.init.zeros())
    h = g.vector("h0", 4)
    xs = [g.vector(f"x{t}", 3) for t in range(steps)]
    for x in xs:
        h = ev.tanh(W @ x + U @ h + b)
    cost = ev.sum(h * h)
    params = [W, U, b]
    ev.grad(cost, params)
    feeds = {x: rng.standard_normal(3) for x in xs}
    feeds[g.inputs()[0]] = np.zeros(4)
    m = ev.TapeMachine(g, trace=True)
    m.run(feeds)
    return g, W, m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out", help="directory for the SVG files (default: out/)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(0)

    written = [square(args.out)]
    g, W, m = rnn_step_graph(1, rng)
    written.append(ev.render(g, os.path.join(args.out, "rnn_step.svg"), title="one RNN step"))
    written.append(ev.render(g, os.path.join(args.out, "rnn_step_w.svg"), around=[W], depth=2,
                             title="around W, depth 2"))
    g25, _, _ = rnn_step_graph(STEPS, rng)
    written.append(ev.render(g25, os.path.join(args.out, "rnn_unrolled.svg"), collapse="site",
                             constants=False, title=f"RNN unrolled {STEPS} steps, folded"))
    written.append(ev.render(m.program, os.path.join(args.out, "program.svg"), title="one RNN step, compiled"))
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
