"""The time to a first result: compile time against graph size, the first run of a new
program with a cold and a warm kernel cache (blocking and tiered), the step-time
distribution of LispMachine loops, and a workload of many small distinct programs.

    python benchmarks/bench_latency.py            # everything (several minutes)
    python benchmarks/bench_latency.py --quick    # smaller sizes and counts

Sections (each prints a table):

compile    compile_graph per node for the unrolled LSTM training step of the benchmarks
           (hidden 128, batch 32, its gradients; T steps) and for a chain of
           tanh(x * w) with its gradient, warm kernel cache (the second compile of each
           graph is timed), and the objects a compile leaves to the cyclic collector
           (freed only by its next scan, whose time falls on whatever runs then)
first run  a fresh process builds a model, constructs its TapeMachine and runs it once:
           the time of those two, with a cold kernel cache (an empty EXPRVM_CACHE_DIR)
           and a warm one, blocking (fuse="sync") and tiered (the default); the ratio is
           to the warm blocking time (a warm compile plus one run)
lisp       LispMachine loops (each in a fresh process): the adding problem (--machine lisp: a fresh graph per batch,
           lengths 10..30, replayed once a length came 8 times) and the char-RNN model's
           step (one graph, run every step); step times after a warm-up (median, p90,
           p99, max), the collector's oldest-generation pauses, graph building per node
           (the nodes of the char-RNN's ev.scan body counted with the outer graph's);
           with the default collector and inside ev.steady_gc()
build      graph building per node: the unrolled LSTM training step (T 25 and 100, with
           ev.grad), the chain (1000 steps, with ev.grad), the char-RNN model's step (an
           ev.scan: its body's nodes counted too) and the adding problem's LispMachine
           graph (unrolled, T 30); the weights are made before the clock starts. The median
           of several builds: wall and CPU time with the default collector, and CPU time
           with it disabled (gc off: what the collector's passes add is the difference)
peers      the unrolled LSTM training step (hidden 128, batch 32, T steps, its gradients) from
           nothing to a first result, each library in a fresh process: exprvm builds the
           graph (ev.grad), constructs its TapeMachine (tiered, a cold kernel cache) and
           runs it; JAX (jax.jit of value_and_grad) traces, compiles with XLA and runs;
           PyTorch (eager) runs a first step, forward and backward, with nothing to
           compile. Also a later step (median of 3), and building per node: exprvm's graph
           with ev.grad, JAX's trace of value_and_grad (jax.make_jaxpr) per equation.
           Rows of a library that is not installed say n/a
oracle     N small random graphs (elementwise ops, sums, float32 and float64), each
           compiled into two programs (values and gradients, values alone) run 3 times
           each, in a fresh process with a cold cache: wall time for tiered, blocking
           and no fusion (fuse=False), the process's exit included

Timings are of this machine at this moment (`lscpu` names the CPU): compare numbers
within one run. On an older exprvm without tiers or steady_gc the rows that need them
say n/a.
"""
import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT, os.path.join(ROOT, "examples")]

import numpy as np  # noqa: E402

import exprvm as ev  # noqa: E402
import models  # noqa: E402
from timing import median_s  # noqa: E402
from exprvm.compiler import compile_graph  # noqa: E402
from exprvm.core.body import nested_graphs  # noqa: E402

try:
    from exprvm.compiler import tiers  # noqa: E402
except ImportError:         # an exprvm without tiered compilation
    tiers = None
SYNC = "sync" if tiers is not None else True


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and counts")
    ap.add_argument("--only", default="compile,first,lisp,build,peers,oracle", help="sections to run")
    ap.add_argument("--steps", default=None, help="LSTM lengths T for the compile table, comma-separated")
    ap.add_argument("--graphs", type=int, default=None, help="random graphs in the oracle workload")
    return ap.parse_args(argv)


# -- compile time against graph size ---------------------------------------------------------

def lstm_graph(T, w=None):
    w = models.rnn_weights(65, 128, gates=4) if w is None else w
    g = ev.Graph(f"lstm T={T}")
    m = models.lstm(g, w, T, 32)
    return g, [m.cost]


def chain_graph(n):
    g = ev.Graph(f"chain {n}")
    m = models.chain(g, n=n, backward=True)
    return g, [m.cost]


def compile_table(a):
    steps = [int(s) for s in a.steps.split(",")] if a.steps else ([25, 100, 250] if a.quick
                                                                   else [25, 100, 250, 500, 1000])
    chains = [1000, 5000] if a.quick else [1000, 5000, 10000]
    rows = []
    for kind, sizes, make in (("lstm T", steps, lstm_graph), ("chain n", chains, chain_graph)):
        for n in sizes:
            g, outs = make(n)
            compile_graph(g, outs, fuse=SYNC)           # the kernels built and loaded
            gc.collect()
            gc.disable()
            try:    # what a compile leaves to the collector
                compile_graph(g, outs, fuse=SYNC)
                left = gc.collect()
            finally:
                gc.enable()
            t = median_s(lambda: compile_graph(g, outs, fuse=SYNC), 1 if n >= 500 else 3)
            rows.append((f"{kind}={n}", len(g), t, t / len(g) * 1e6, left))
    print("\ncompile (warm kernel cache; median of 3, 1 above 500 steps; garbage: the objects a "
          "compile leaves to the cyclic collector)")
    print(f"{'graph':<14} {'nodes':>7} {'seconds':>9} {'us/node':>9} {'garbage':>9}")
    for name, nodes, t, per, left in rows:
        print(f"{name:<14} {nodes:>7} {t:>9.3f} {per:>9.1f} {left:>9}")
    return rows


# -- first run of a new program ------------------------------------------------------------------

FIRST = """
import sys, time
sys.path[:0] = {paths!r}
t0 = time.perf_counter()
import exprvm as ev, models
w, data = models.weights_and_data({name!r})
m = models.graph({name!r}, w)
feeds = m.feeds(data)
t1 = time.perf_counter()
tm = ev.TapeMachine(m.graph, outputs=[m.cost], fuse={fuse!r})
t2 = time.perf_counter()
tm.run(feeds)
t3 = time.perf_counter()
print(t3 - t1, t2 - t1, getattr(tm.program, "tier", "-"))
"""


def _first_run(name, fuse, cache):
    env = dict(os.environ, EXPRVM_CACHE_DIR=cache)
    code = FIRST.format(paths=[HERE, ROOT], name=name, fuse=fuse)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    if out.returncode:
        raise RuntimeError(out.stderr)
    total, comp, tier = out.stdout.split()
    return float(total), float(comp), tier


def first_table(a):
    rows = []
    for name in ("lstm_b32", "rnn_b1"):
        with tempfile.TemporaryDirectory() as warm:
            _first_run(name, SYNC, warm)                # fills the warm cache
            ref, _, _ = _first_run(name, SYNC, warm)
            for cache in ("cold", "warm"):
                for mode in ("sync", "tiered"):
                    if mode == "tiered" and tiers is None:
                        rows.append((name, cache, mode, None, None, "n/a", None))
                        continue
                    fuse = SYNC if mode == "sync" else True
                    with tempfile.TemporaryDirectory() as cold:
                        total, comp, tier = _first_run(name, fuse, cold if cache == "cold" else warm)
                    rows.append((name, cache, mode, total, comp, tier, total / ref))
    print("\nfirst run of a new program (fresh process: construct the TapeMachine and run once)")
    print(f"{'model':<10} {'cache':<6} {'mode':<7} {'total s':>8} {'compile s':>10} {'tier':<9} {'/ warm sync':>11}")
    for name, cache, mode, total, comp, tier, ratio in rows:
        if total is None:
            print(f"{name:<10} {cache:<6} {mode:<7} {'n/a':>8}")
            continue
        print(f"{name:<10} {cache:<6} {mode:<7} {total:>8.3f} {comp:>10.3f} {tier:<9} {ratio:>10.2f}x")
    return rows


# -- LispMachine step-time distribution ---------------------------------------------------------

class _Pauses:
    """Durations of the collector's oldest-generation collections (gc.callbacks)."""

    def __init__(self):
        self.times = []
        self._t = None

    def __call__(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        elif info["generation"] == 2 and self._t is not None:
            self.times.append(time.perf_counter() - self._t)

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def _adding_steps(n, steady):
    import adding_problem as ap
    args = ap.parse_args(["--machine", "lisp", "--min-len", "10", "--max-len", "30", "--batch", "64",
                          "--steps", str(n)])
    ev.init.seed(0)
    model = ap.Adder("lstm", 32, 0)
    opt = ev.solvers.Adam(model, lr=1e-2, clip_norm=1.0)
    batches = ap.Batches(args, pad=False)       # each batch at its own length
    times, builds = [], []
    block = ev.steady_gc() if steady else contextlib.nullcontext()
    with block, _Pauses() as pauses:      # NOTE: the block's own first collection not counted
        for i in range(n):
            xs, ys, length = batches[i]
            t0 = time.perf_counter()
            g = ev.Graph(f"adding T={int(length)}")      # as the example's LispMachine step does
            x, y = g.tensor("x", xs.shape, np.float32), g.tensor("y", ys.shape, np.float32)
            loss = model.loss(x, y)
            t1 = time.perf_counter()
            ev.LispMachine(g, cost=loss).run({x: xs, y: ys})
            opt.step()
            times.append(time.perf_counter() - t0)
            builds.append((t1 - t0) / count_nodes(g))
    return times, pauses.times, builds


def _char_rnn_steps(n, steady):
    import char_rnn
    ev.init.seed(0)
    model = char_rnn.CharModel(65, "lstm", 128, 1, 0)
    g = ev.Graph("char_rnn")
    ids, targets, state0, loss, final = model.sequence(g, 25, 32)
    again = ev.Graph("again")
    t = time.perf_counter()
    model.sequence(again, 25, 32)
    build = (time.perf_counter() - t) / count_nodes(again)
    lm = ev.LispMachine(g, cost=loss, outputs=ev.nn.flat(final))
    opt = ev.solvers.Adam(lr=1e-3)
    rng = np.random.default_rng(0)
    feeds = {i: v for ins, vals in zip(state0, model.rnn.zero_state(32)) for i, v in zip(ins, vals)}
    times = []
    block = ev.steady_gc() if steady else contextlib.nullcontext()
    with block, _Pauses() as pauses:      # NOTE: the block's own first collection not counted
        for _ in range(n):
            feeds[ids] = rng.integers(0, 65, (25, 32)).astype(np.int32)
            feeds[targets] = rng.integers(0, 65, (25, 32)).astype(np.int32)
            t0 = time.perf_counter()
            lm.run(feeds)
            opt.step(model.nodes(g))
            times.append(time.perf_counter() - t0)
    return times, pauses.times, [build]


LISP = """
import sys, json
sys.path[:0] = {paths!r}
import bench_latency as b
print(json.dumps(getattr(b, {fn!r})({n}, {steady!r})))
"""


def _lisp_in_fresh_process(fn, n, steady, env=None):
    """One LispMachine loop in a process of its own (NOTE: a loop run after another in one
    process finds its replay programs compiled and the other's garbage about: a training
    script runs one loop). env: variables the example itself sets before numpy loads."""
    code = LISP.format(paths=[HERE, ROOT, os.path.join(ROOT, "examples")], fn=fn, n=n, steady=steady)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                         env=dict(os.environ, **(env or {})))
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def lisp_table(a):
    n_add, n_char = (300, 120) if a.quick else (1500, 400)
    rows = []
    # NOTE: adding_problem.py keeps numpy's BLAS on one thread (its products are tiny),
    # but it is imported here after numpy: the variable is set for its process instead
    for name, run, n, env in (("adding", _adding_steps, n_add, {"OPENBLAS_NUM_THREADS": "1"}),
                              ("char-RNN", _char_rnn_steps, n_char, None)):
        for steady in (False, True):
            if steady and not hasattr(ev, "steady_gc"):
                rows.append((name, "steady_gc", None))
                continue
            times, pauses, builds = _lisp_in_fresh_process(run.__name__, n, steady, env)
            ms = np.array(times[n // 3:]) * 1e3          # after the walks and compiles
            rows.append((name, "steady_gc" if steady else "default", (
                np.median(ms), np.percentile(ms, 90), np.percentile(ms, 99), ms.max(),
                len(pauses), max(pauses, default=0.0) * 1e3, np.median(builds) * 1e6, len(ms))))
    print("\nLispMachine steps (ms, after the first third of the steps; gen-2: the collector's"
          " oldest-generation collections)")
    print(f"{'loop':<9} {'gc':<10} {'median':>7} {'p90':>7} {'p99':>7} {'max':>8} {'p99/med':>8} "
          f"{'gen-2':>6} {'max gen-2':>10} {'build us/node':>14}")
    for name, how, r in rows:
        if r is None:
            print(f"{name:<9} {how:<10} {'n/a':>7}")
            continue
        med, p90, p99, mx, npause, mpause, build, _ = r
        print(f"{name:<9} {how:<10} {med:>7.2f} {p90:>7.2f} {p99:>7.2f} {mx:>8.2f} {p99 / med:>8.1f} "
              f"{npause:>6} {mpause:>9.1f}  {build:>13.2f}")
    return rows


# -- graph building -----------------------------------------------------------------------------

def count_nodes(g):
    """The nodes of g and of every loop or branch body its nodes hold (a body reached
    twice counted once): what building g made."""
    return sum(len(graph) for graph in nested_graphs(g))


def _build_lstm(T):
    w = models.rnn_weights(65, 128, gates=4)
    return lambda: lstm_graph(T, w)[0]


def _build_chain():
    return lambda: chain_graph(1000)[0]


def _build_char_rnn():
    import char_rnn
    ev.init.seed(0)
    model = char_rnn.CharModel(65, "lstm", 128, 1, 0)

    def build():
        g = ev.Graph("char_rnn")
        model.sequence(g, 25, 32)
        return g
    return build


def _build_adding():
    import adding_problem as ap
    ev.init.seed(0)
    model = ap.Adder("lstm", 32, 0)
    xs, ys = np.zeros((30, 64, 2), np.float32), np.zeros((64, 1), np.float32)

    def build():
        g = ev.Graph("adding T=30")       # as the example's LispMachine step builds it
        model.loss(g.tensor("x", xs.shape, np.float32), g.tensor("y", ys.shape, np.float32))
        return g
    return build


def _per_node(build, repeat, collector):
    """Median wall and CPU seconds per node over `repeat` builds (after one), each after a
    full collection."""
    build()
    walls, cpus = [], []
    for _ in range(repeat):
        gc.collect()
        if not collector:
            gc.disable()
        try:
            t, c = time.perf_counter(), time.process_time()
            g = build()
            wall, cpu = time.perf_counter() - t, time.process_time() - c
        finally:
            gc.enable()
        nodes = count_nodes(g)
        walls.append(wall / nodes)
        cpus.append(cpu / nodes)
    return float(np.median(walls)), float(np.median(cpus))


def build_table(a):
    repeat = 5 if a.quick else 21
    cases = (("lstm T=25 +grad", _build_lstm(25)), ("lstm T=100 +grad", _build_lstm(100)),
             ("chain 1000 +grad", _build_chain()), ("char-RNN (scan)", _build_char_rnn()),
             ("adding lisp T=30", _build_adding()))
    rows = []
    for name, build in cases:
        nodes = count_nodes(build())
        (wall, cpu), (_, cpu_off) = _per_node(build, repeat, True), _per_node(build, repeat, False)
        rows.append((name, nodes, wall * 1e6, cpu * 1e6, cpu_off * 1e6))
    print(f"\ngraph building (us per node, median of {repeat}; nodes of loop bodies included; "
          "cpu: the process's CPU time)")
    print(f"{'graph':<18} {'nodes':>6} {'us/node':>8} {'cpu':>7} {'cpu gc off':>11}")
    for name, nodes, wall, cpu, off in rows:
        print(f"{name:<18} {nodes:>6} {wall:>8.2f} {cpu:>7.2f} {off:>11.2f}")
    return rows


# -- from nothing to a first result, against the peers -----------------------------------------

PEER = """
import sys, time, statistics
sys.path[:0] = {paths!r}
import numpy as np
import models, peers
lib, T = {lib!r}, {steps!r}
w, data = models.rnn_weights(65, 128, gates=4), models.rnn_data(65, T, 32)
def _t(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t
if lib == "exprvm":
    import exprvm as ev
    t0 = time.perf_counter()
    g = ev.Graph("lstm")
    m = models.lstm(g, w, T, 32)
    t1 = time.perf_counter()
    tm = ev.TapeMachine(g, outputs=[m.cost])
    feeds = m.feeds(data)
    tm.run(feeds)
    t2 = time.perf_counter()
    steady = statistics.median([_t(lambda: tm.run(feeds)) for _ in range(3)])
    print(t2 - t0, steady, t1 - t0, len(g))
elif lib == "jax":
    step = peers.jax_step("lstm_b32", w, data)
    if step is None:
        raise SystemExit(3)
    first = _t(step)
    steady = statistics.median([_t(step) for _ in range(3)])
    fresh = peers.jax_step("lstm_b32", w, data)     # a new function: nothing traced yet
    t = time.perf_counter()
    jaxpr = fresh.jaxpr()
    print(first, steady, time.perf_counter() - t, len(jaxpr.jaxpr.eqns))
else:
    step = peers.torch_step("lstm_b32", w, data)
    if step is None:
        raise SystemExit(3)
    first = _t(step)
    print(first, statistics.median([_t(step) for _ in range(3)]), "nan", 0)
"""


def _peer_run(lib, steps):
    """(first result s, later step s, building s, nodes or equations) in a fresh process
    with a cold kernel cache, or None when the library is not installed."""
    with tempfile.TemporaryDirectory() as cold:
        env = dict(os.environ, EXPRVM_CACHE_DIR=cold)
        code = PEER.format(paths=[HERE, ROOT], lib=lib, steps=steps)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    if out.returncode == 3:         # peers.py found no such library
        return None
    if out.returncode:
        raise RuntimeError(out.stderr)
    first, later, build, count = out.stdout.split()[-4:]
    return float(first), float(later), float(build), int(count)


def peers_table(a):
    steps = [25] if a.quick else [25, 100]
    rows = []
    for T in steps:
        for lib in ("exprvm", "jax", "torch"):
            rows.append((T, lib, _peer_run(lib, T)))
    print("\nfirst result of the unrolled LSTM training step against the peers (fresh process each;"
          " exprvm tiered with a cold kernel cache)")
    print(f"{'T':>4} {'library':<8} {'first s':>9} {'later ms':>9} {'/ exprvm':>9} {'build us per node':>18}")
    ours = {}
    for T, lib, r in rows:
        if r is None:
            print(f"{T:>4} {lib:<8} {'n/a':>9}")
            continue
        first, later, build, count = r
        if lib == "exprvm":
            ours[T] = first
        ratio = f"{first / ours[T]:>8.1f}x" if T in ours else f"{'-':>9}"
        per = f"{build / count * 1e6:>9.1f} ({count} {'nodes' if lib == 'exprvm' else 'eqns'})" if count else ""
        print(f"{T:>4} {lib:<8} {first:>9.3f} {later * 1e3:>9.1f} {ratio} {per}")
    return rows


# -- many small distinct programs -------------------------------------------------------------

UNARY = ("tanh", "sigmoid", "sin", "cos", "negative", "softplus", "square", "exp")
BINARY = ("add", "subtract", "multiply", "maximum", "minimum", "divide")
SHAPES = ((3, 4), (4,), (3, 1), ())


def random_graph(rng):
    """A small random graph like the property tests' (tests/test_random_graphs.py)."""
    dtype = (np.float32, np.float64)[int(rng.integers(2))]
    g = ev.Graph()
    leaves = []
    for i in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        leaves.append(g.tensor(f"x{i}", shape, dtype, value=rng.uniform(-1.5, 1.5, shape).astype(dtype)))
    pool = list(leaves)
    for _ in range(int(rng.integers(2, 11))):
        a, b = pool[int(rng.integers(len(pool)))], pool[int(rng.integers(len(pool)))]
        kind = rng.random()
        if kind < 0.45:
            name = UNARY[int(rng.integers(len(UNARY)))]
            out = getattr(ev, name)(ev.tanh(a) if name in ("exp", "square") else a)
        elif kind < 0.9:
            name = BINARY[int(rng.integers(len(BINARY)))]
            out = getattr(ev, name)(a, 2.0 + ev.sigmoid(b)) if name == "divide" else getattr(ev, name)(a, b)
        else:
            out = ev.sum(a, axis=None if a.ndim == 0 else int(rng.integers(a.ndim)), keepdims=True)
        pool.append(out)
    cost = ev.sum(pool[-1] * pool[-1]) + sum(ev.sum(leaf) for leaf in leaves)
    grads = ev.grad(cost, leaves)
    return g, cost, grads


ORACLE = """
import sys, time
sys.path[:0] = {paths!r}
t0 = time.perf_counter()
import numpy as np, exprvm as ev, bench_latency as b
rng = np.random.default_rng(0)
t1 = time.perf_counter()
for _ in range({n}):
    g, cost, grads = b.random_graph(rng)
    for outputs in ([cost] + grads, [cost]):
        m = ev.TapeMachine(g, outputs=outputs, fuse={fuse!r})
        for _ in range(3):
            m.run()
print(time.perf_counter() - t1)
"""


def oracle_table(a):
    n = a.graphs or (60 if a.quick else 500)
    rows = []
    for mode in ("tiered", "sync", "off"):
        if mode == "tiered" and tiers is None:
            rows.append((mode, None, None))
            continue
        fuse = {"tiered": True, "sync": SYNC, "off": False}[mode]
        with tempfile.TemporaryDirectory() as cold:
            env = dict(os.environ, EXPRVM_CACHE_DIR=cold)
            code = ORACLE.format(paths=[HERE, ROOT], n=n, fuse=fuse)
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                 timeout=7200)
            wall = time.perf_counter() - t
        if out.returncode:
            raise RuntimeError(out.stderr)
        rows.append((mode, float(out.stdout.split()[-1]), wall))
    off = next(r[2] for r in rows if r[0] == "off")
    print(f"\n{n} random graphs, two programs each, three runs each (fresh process, cold cache)")
    print(f"{'fuse':<8} {'loop s':>8} {'process s':>10} {'/ off':>7}")
    for mode, loop, wall in rows:
        if loop is None:
            print(f"{mode:<8} {'n/a':>8}")
            continue
        print(f"{mode:<8} {loop:>8.2f} {wall:>10.2f} {wall / off:>6.2f}x")
    return rows


def main(argv=None):
    a = parse(argv)
    print(f"exprvm at {os.path.dirname(ev.__file__)}; tiers: {'yes' if tiers else 'no'}; "
          f"steady_gc: {'yes' if hasattr(ev, 'steady_gc') else 'no'}")
    only = set(a.only.split(","))
    out = {}
    if "compile" in only:
        out["compile"] = compile_table(a)
    if "first" in only:
        out["first"] = first_table(a)
    if "lisp" in only:
        out["lisp"] = lisp_table(a)
    if "build" in only:
        out["build"] = build_table(a)
    if "peers" in only:
        out["peers"] = peers_table(a)
    if "oracle" in only:
        out["oracle"] = oracle_table(a)


if __name__ == "__main__":
    main()
