"""Compile times: the char-RNN graph of benchmark (a), and chains of growing length
(compile time should grow linearly with the number of nodes)."""

import exprvm as ev
import models
from timing import median_s


def chain_graph(n):
    g = ev.Graph("chain")
    x = g.vector("x", 16, dtype="float32")
    w = g.vector("w", 16, dtype="float32", value=[0.9] * 16)
    for _ in range(n):
        x = ev.tanh(x * w)
    return g, x


def run(quick=False):
    w, _ = models.weights_and_data("rnn_b1")
    m = models.graph("rnn_b1", w)
    ev.TapeMachine(m.graph, outputs=[m.cost], fuse="sync")     # warm imports and kernel lookups
    t = median_s(lambda: ev.TapeMachine(m.graph, outputs=[m.cost], fuse="sync"), 3 if quick else 7)
    tm = ev.TapeMachine(m.graph, outputs=[m.cost], fuse="sync")
    print(f"\ncompile (a) char-RNN b1: {len(m.graph)} nodes -> {len(tm.program)} instructions "
          f"in {t * 1e3:.1f} ms (median); planned {tm.program.peak_bytes} B, "
          f"lower bound {tm.program.lower_bound} B")
    for n in ((500, 5000) if quick else (500, 1000, 2500, 5000)):
        g, x = chain_graph(n)
        t = median_s(lambda: ev.TapeMachine(g, outputs=[x], fuse="sync"), 3)
        print(f"compile chain: {len(g)} nodes in {t * 1e3:.1f} ms ({t / len(g) * 1e6:.1f} us/node)")
