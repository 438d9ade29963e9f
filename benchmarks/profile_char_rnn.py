"""Where a char-RNN training step spends its time: the TapeMachine's profile (per
instruction) and the LispMachine's (per node kind) of examples/char_rnn.py's model.

    python benchmarks/profile_char_rnn.py [--cell lstm --hidden 128 --seq 25 --batch 32]
                                          [--runs 50] [--top 15] [--svg out/char_rnn_profile.svg]
    python benchmarks/profile_char_rnn.py --smoke     # tiny sizes, 3 runs: checks it works

Prints both tables and draws the compiled step coloured by time. One fixed batch of the
standard library's source (as char_rnn.py trains on by default); timings are of this
machine at this moment, so run it on a quiet machine.
"""
import argparse
import os
import sys

# NOTE: no thread pinning, as char_rnn.py: the compiler's thread policy picks each
# product's threads (OPENBLAS_NUM_THREADS=1 in the environment pins it).
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
sys.path.insert(0, os.path.dirname(HERE))
import exprvm as ev  # noqa: E402
from char_rnn import CharModel  # noqa: E402
from common import Vocab, load_text  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", help="text file (default: Python stdlib source)")
    p.add_argument("--cell", choices=sorted(ev.nn.CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq", type=int, default=25)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--unroll", action="store_true", help="the unrolled step (default: one ev.scan)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--top", type=int, default=15, help="rows of the instruction table")
    p.add_argument("--svg", default=os.path.join("out", "char_rnn_profile.svg"), help="'' for none")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and 3 runs")
    a = p.parse_args(argv)
    if a.smoke:
        a.hidden, a.seq, a.batch, a.runs = min(a.hidden, 16), min(a.seq, 4), min(a.batch, 2), 3
    return a


def step_graph(a):
    """The training step of char_rnn.py: graph, its feeds for one batch, the loss."""
    text, _ = load_text(a.text)
    vocab = Vocab(text[:200_000])
    model = CharModel(len(vocab), a.cell, a.hidden, 1, seed=0)
    g = ev.Graph("char_rnn")
    ids, targets, state0, loss, final = model.sequence(g, a.seq, a.batch, unroll=a.unroll)
    x, y = ev.data.TextStreams(vocab.encode(text[:200_000]), a.batch, a.seq)[0]
    feeds = {ids: x, targets: y}
    for ins, vals in zip(state0, model.rnn.zero_state(a.batch)):
        feeds.update(zip(ins, vals))
    return g, model, loss, final, feeds


def main(argv=None):
    a = parse_args(argv)
    g, model, loss, final, feeds = step_graph(a)
    params = model.nodes(g)
    ev.grad(loss, params)
    m = ev.TapeMachine(g, outputs=[loss] + ev.nn.flat(final), fuse="sync")
    print(f"char-RNN step: {a.cell}, hidden {a.hidden}, {a.seq} steps, batch {a.batch}; "
          f"{len(g.nodes)} nodes, {len(m.program)} instructions")
    tape = m.profile(feeds, runs=a.runs)
    print("\nTapeMachine\n" + tape.table(top=a.top))
    print("\nby op:")
    for op, (n, s, share) in list(tape.by_op().items())[:8]:
        print(f"  {op:<16} {n:>4} instructions {s * 1e6:10.1f} us {share:6.1%}")
    if a.svg:
        os.makedirs(os.path.dirname(a.svg) or ".", exist_ok=True)
        ev.render(m.program, a.svg, profile=tape)
        print(f"\nwrote {a.svg}")

    # NOTE: a fresh graph for the walk, as a LispMachine user builds one per batch
    g2, model2, loss2, final2, feeds2 = step_graph(a)
    lm = ev.LispMachine(g2, cost=loss2, outputs=ev.nn.flat(final2))
    walk = lm.profile(feeds2, runs=max(1, min(a.runs, 10)))
    print("\nLispMachine (walked)\n" + walk.table())
    return tape, walk


if __name__ == "__main__":
    main()
