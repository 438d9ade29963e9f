"""Training steps of the issue's models: exprvm's two machines against handwritten
numpy (and, when installed, PyTorch eager, PyTorch's fused torch.nn.RNN / LSTM / GRU and
jax.jit), timed in one interleaved run; compile times of the tape, cold and warm cache.

Run through run_all.py, which runs every row in the default environment and pinned to
one thread (the pinning must happen before numpy is imported).
"""
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import exprvm as ev
import gru
import handwritten as hw
import models
import peers

LR = 0.01
RECURRENT = ("rnn_b1", "rnn_b32", "lstm_b32", gru.NAME)


def weights_and_data(name, small=False):
    return gru.weights_and_data(small) if name == gru.NAME else models.weights_and_data(name, small)


def graph(name, w, small=False, grads=True, data=None):
    if name == gru.NAME:
        return gru.graph(w, small, grads, data)
    return models.graph(name, w, small, grads, data)


def _sgd(params):
    for p in params:
        p.value -= LR * p.grad


def numpy_step(name, w, data):
    if name in ("rnn_b1", "rnn_b32"):
        return lambda: hw.rnn_step(w, data["ids"], data["targets"], LR)
    if name == "lstm_b32":
        return lambda: hw.lstm_step(w, data["ids"], data["targets"], LR)
    if name == gru.NAME:
        return lambda: gru.step(w, data["ids"], data["targets"], LR)
    if name == "mlp":
        return lambda: hw.mlp_step(w, data["x"], data["y"], LR)
    wv = np.linspace(0.5, 1.0, 16).astype(np.float32)
    if name == "chain_fwd":
        return lambda: hw.chain_forward(data["x"], wv)
    if name == "chain_bwd":
        return lambda: hw.chain_backward(data["x"], wv)
    return lambda: hw.expr(data["x"], data["y"])


def tape_step(name, w, data, backend=None, small=False):
    """The graph is built and compiled once (step.machine)."""
    m = graph(name, w, small)
    # NOTE: fuse="sync": the fused program from the first run (not its unfused first tier)
    tm = ev.TapeMachine(m.graph, outputs=m.outputs or [m.cost], backend=backend, fuse="sync")
    feeds = m.feeds(data)
    params = m.params if name in RECURRENT + ("mlp",) else []

    def step():
        tm.run(feeds)
        _sgd(params)
    step.machine = tm
    return step


def lisp_step(name, w, data, replay=True, small=False):
    """The graph is built anew every step (what the LispMachine is for). With replay, the
    steps after the structure's first walks run the program compiled for it; without,
    every step is walked node by node and differentiated at run time."""
    if name in ("chain_fwd", "chain_bwd", "expr"):
        return None

    def step():
        m = graph(name, w, small, grads=False, data=data)
        ev.LispMachine(m.graph, cost=m.cost, replay=replay).run()
        _sgd(m.params)
    # NOTE: time the steady state: the structure is compiled after its first walks.
    step.warmup = ev.replay.WALKS_BEFORE_COMPILE + 2 if replay else 3
    return step


def restorer(w):
    """Puts the weight arrays of w back to their values now, in place.

    NOTE: every implementation trains its own copy of the weights on one fixed batch,
    thousands of steps per run. Left alone, the tanh units saturate and the gradients
    sink into subnormal floats, whose arithmetic is many times slower: a step's time
    would then depend on how many steps that implementation happened to run (the
    char-RNN tape step went from 2 to 12 ms so). measure() therefore restores the
    weights before every timed call, and every call times the same step.
    """
    saved = copy.deepcopy(w)
    return lambda: [np.copyto(w[k], v) for k, v in saved.items()]


def implementations(name, backend=None, small=False):
    """{label: (step, reset)}, and the tape's machine; reset() restores the weights."""
    w, data = weights_and_data(name, small)
    impls = {}

    def add(label, factory, *args):
        mine = copy.deepcopy(w)
        fn = factory(name, mine, data, *args)
        if fn is not None:
            impls[label] = (fn, getattr(fn, "reset", None) or restorer(mine))
        return fn

    add("numpy", numpy_step)
    tm = add("tape", tape_step, backend, small).machine
    add("lisp", lisp_step, True, small)
    add("lisp-walk", lisp_step, False, small)
    for label, factory in (("torch", peers.torch_step), ("torch.nn", peers.torch_nn_step),
                           ("jax.jit", peers.jax_step)):
        try:
            add(label, factory, LR)
        except Exception as e:      # a peer that fails is reported, not fatal
            print(f"  ({label} skipped on {name}: {type(e).__name__}: {e})")
    return impls, tm


def measure(impls, rounds, target_s=0.02):
    """Median seconds per call of each implementation, interleaved round by round.
    impls: {label: step} or {label: (step, reset)}; reset() runs, untimed, before
    every call, so that every timed call is the same step; a step runs step.warmup
    times (default 3) before any timing.

    NOTE: restoring before every call, not every block: on one fixed batch the char-RNN
    b32 weights reach subnormal gradients by the 7th step after a restore (a 0.3 ms
    matmul then takes 9 ms), so a block's time depended on how many steps it held.
    """
    impls = {k: v if isinstance(v, tuple) else (v, None) for k, v in impls.items()}
    blocks = {}
    for k, (fn, reset) in impls.items():
        for _ in range(getattr(fn, "warmup", 3)):
            fn()
        # NOTE: programs compiled in the warm-up (the LispMachine's replayed ones) run their
        # final tier: their background builds done, and swapped in by one more call
        tiers = getattr(ev.compiler, "tiers", None)      # (an exprvm with tiered compilation)
        if tiers is not None and tiers.pending():
            tiers.wait_all()
            fn()
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        fn()
        blocks[k] = max(1, int(target_s / max(time.perf_counter() - t0, 1e-7)))
    times = {k: [] for k in impls}
    clock = time.perf_counter
    for _ in range(rounds):
        for k, (fn, reset) in impls.items():
            n = blocks[k]
            if reset is None:
                t0 = clock()
                for _ in range(n):
                    fn()
                times[k].append((clock() - t0) / n)
                continue
            spent = 0.0
            for _ in range(n):
                reset()
                t0 = clock()
                fn()
                spent += clock() - t0
            times[k].append(spent / n)
    return {k: statistics.median(v) for k, v in times.items()}


TITLES = {
    "rnn_b1": "(a) char-RNN BPTT+SGD, batch 1",
    "rnn_b32": "(a) char-RNN BPTT+SGD, batch 32",
    "lstm_b32": "(b) LSTM BPTT+SGD, batch 32",
    gru.NAME: "(b) GRU BPTT+SGD, batch 32",
    "mlp": "(c) MLP 784-128-10 +SGD, batch 64",
    "chain_fwd": "(d) 50x tanh(x*w), 16 floats, forward",
    "chain_bwd": "(d) 50x tanh(x*w), 16 floats, forward+backward",
    "expr": "(e) z = x*y + x*x + y with dz/dx, dz/dy",
}


def ufunc_call_seconds(rounds):
    """One numpy ufunc call on 16 floats (out= given), measured now: the yardstick for the
    per-instruction figures, which move with the machine's load."""
    a, b, c = (np.ones(16, np.float32) for _ in range(3))
    return measure({"ufunc": lambda: np.multiply(a, b, c)}, rounds, target_s=0.005)["ufunc"]


def run(names, rounds, backend=None, small=False, target_s=0.02):
    """Time every implementation of each benchmark; print a table per benchmark and return
    [(name, implementation, seconds, ratio to numpy)]."""
    rows = []
    if any(n.startswith("chain") or n == "expr" for n in names):
        u = ufunc_call_seconds(rounds)
        print(f"\nyardstick: one numpy ufunc call on 16 floats = {u * 1e6:.2f} us now")
    for name in names:
        impls, tm = implementations(name, backend, small)
        med = measure(impls, rounds, target_s)
        base = med["numpy"]
        print(f"\n{TITLES[name]}   [tape: {len(tm.program)} instructions, {tm.program.kernels()}]")
        for k, t in med.items():
            extra = ""
            if k == "tape":
                extra = f"  {t / len(tm.program) * 1e6:.2f} us/instruction" if name.startswith("chain") else ""
                if name == "expr":
                    extra = f"  {t * 1e6:.2f} us/run"
            print(f"  {k:9s} {t * 1e3:9.4f} ms   {t / base:6.2f}x numpy{extra}")
            rows.append((name, k, t, t / base))
    return rows


# -- compile times: cold and warm cache, each in a fresh process ------------------------

_COMPILE = """
import json, sys, time
sys.path[:0] = {path!r}
import bench_models
w, data = bench_models.weights_and_data({name!r}, {small!r})
m = bench_models.graph({name!r}, w, {small!r})
t0 = time.perf_counter()
tm = bench_models.ev.TapeMachine(m.graph, outputs=[m.cost], fuse="sync")
t = time.perf_counter() - t0
from exprvm.kernels import generated
print(json.dumps([t, generated.STATS["compiled"], len(tm.program), tm.program.kernels()]))
"""


def compile_times(name, small=False):
    """(cold, warm) seconds to compile benchmark `name` into a TapeMachine, each in a new
    process: cold with an empty kernel cache (the fused kernels are built), warm with the
    cache the cold run left (nothing is built)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = _COMPILE.format(path=[here, os.path.dirname(here)], name=name, small=small)
    out = []
    with tempfile.TemporaryDirectory(prefix="exprvm-cache-") as cache:
        env = dict(os.environ, EXPRVM_CACHE_DIR=cache)
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                  timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1])
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def print_compile_times(names, small=False):
    for name in names:
        try:
            (cold, built, n, kinds), (warm, rebuilt, _, _) = compile_times(name, small)
        except (RuntimeError, subprocess.SubprocessError, ValueError) as e:
            print(f"compile {name}: failed ({e})")
            continue
        print(f"compile {name}: {n} instructions {kinds}; cold cache {cold * 1e3:.0f} ms "
              f"({built} C build), warm cache {warm * 1e3:.0f} ms ({rebuilt} builds)")
