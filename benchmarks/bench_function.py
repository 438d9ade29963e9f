"""ev.function's overhead: a training step written as a traced function of its data
arrays, against the same step on an explicit TapeMachine (graph built and compiled by
hand, data fed by run()), in one interleaved run (medians; float32). Both steps update
the same way (plain SGD over the parameters' .grad), each on its own copy of the
weights, restored before every timed step.

    python benchmarks/bench_function.py [--quick] [--smoke] [--only mlp,rnn_b1]

Also: the MLP step's first call (trace and compile) and a call with a new batch size.
"""
import argparse
import copy
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exprvm as ev  # noqa: E402
import models  # noqa: E402

LR = 0.01
NAMES = ("mlp", "rnn_b1", "rnn_b32")
LABELS = {"mlp": "MLP 784-128-10, batch 64", "rnn_b1": "char-RNN, hidden 128, 25 steps, batch 1",
          "rnn_b32": "char-RNN, batch 32"}


def _sgd(params):
    for p in params:
        p.value -= LR * p.grad


def explicit_step(name, w, data, small=False):
    m = models.graph(name, w, small)
    tm = ev.TapeMachine(m.graph, outputs=[m.cost], fuse="sync")     # the final tier, as f's
    feeds = m.feeds(data)

    def step():
        loss, = tm.run(feeds)
        _sgd(m.params)
        return loss
    return step


def function_step(name, w, data, small=False):
    fn = models.traced(name, w, small)
    f = ev.function(fn, fuse="sync")
    a, b = (data["x"], data["y"]) if name == "mlp" else (data["ids"], data["targets"])

    def step():
        loss = f(a, b)
        _sgd(fn.params)
        return loss
    step.function = f
    return step


def measure(name, rounds, target_s, small=False):
    w, data = models.weights_and_data(name, small)
    impls = {}
    for label, factory in (("explicit", explicit_step), ("function", function_step)):
        mine = copy.deepcopy(w)
        saved = copy.deepcopy(w)
        impls[label] = (factory(name, mine, data, small),
                        lambda m=mine, s=saved: [np.copyto(m[k], v) for k, v in s.items()])
    losses = {}
    for label, (step, reset) in impls.items():     # warm up: the trace, the fused kernels
        reset()
        losses[label] = float(step())
        reset()
    assert abs(losses["explicit"] - losses["function"]) <= 1e-4 * max(1.0, abs(losses["explicit"])), losses
    times = {label: [] for label in impls}
    for _ in range(rounds):
        for label, (step, reset) in impls.items():
            n, spent = 0, 0.0
            while spent < target_s:
                reset()
                t0 = time.perf_counter()
                step()
                spent += time.perf_counter() - t0
                n += 1
            times[label].append(spent / n)
    return {label: statistics.median(ts) for label, ts in times.items()}, impls["function"][0].function


def retrace_cost(small=False):
    """Seconds of the MLP step's first call (trace and compile) and of a call with a new,
    shorter batch (traced and compiled again)."""
    w, data = models.weights_and_data("mlp", small)
    fn = models.traced("mlp", w, small)
    f = ev.function(fn)
    x, y = data["x"], data["y"]
    t0 = time.perf_counter()
    f(x, y)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    f(x[:-1], y[:-1])
    second = time.perf_counter() - t0
    return first, second


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that it runs")
    ap.add_argument("--only", default=",".join(NAMES))
    args = ap.parse_args(argv)
    rounds, target = (1, 0.001) if args.smoke else (5, 0.05) if args.quick else (15, 0.2)
    print(f"ev.function step against the explicit TapeMachine step, median of {rounds} rounds:")
    for name in args.only.split(","):
        t, f = measure(name, rounds, target, args.smoke)
        print(f"  {LABELS[name]:<42} explicit {t['explicit'] * 1e3:7.3f} ms   function "
              f"{t['function'] * 1e3:7.3f} ms   {t['function'] / t['explicit']:5.3f}x   "
              f"({f.trace_count} trace)")
    first, second = retrace_cost(args.smoke)
    print(f"  MLP step: first call (trace + compile) {first * 1e3:.1f} ms, a new batch size {second * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
