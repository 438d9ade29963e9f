"""Threads sharing one machine, each with its own feeds: every result must be its own
run's (a web service, a data-parallel thread pool). Runs of one machine take turns."""
import sys
import threading

import numpy as np
import pytest

import exprvm as ev

THREADS, RUNS = 6, 60


@pytest.fixture(autouse=True)
def fast_switching():
    # NOTE: switch threads often, so that runs interleave inside each other if they can
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def hammer(run_one, want):
    """Every thread runs its own feeds RUNS times; the (thread, run, got) that were wrong."""
    wrong, start = [], threading.Barrier(THREADS)

    def worker(k):
        start.wait()
        for r in range(RUNS):
            got = run_one(k, r)
            if not np.allclose(got, want(k, r), rtol=1e-10, atol=1e-12):
                wrong.append((k, r, got))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wrong


def layer():
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((32, 32)) / 6
    g = ev.Graph()
    W = g.matrix("W", (32, 32), value=W0)
    x = g.vector("x", 32)
    cost = ev.sum(ev.tanh(W @ x))
    ev.grad(cost, W)
    xs = [[rng.standard_normal(32) for _ in range(RUNS)] for _ in range(THREADS)]
    return g, W, x, cost, W0, xs


def test_one_tape_machine_many_threads_different_feeds():
    g, W, x, cost, W0, xs = layer()
    gW = g.grads[W]
    m = ev.TapeMachine(g, outputs=[cost, gW])

    def run_one(k, r):
        c, grad = m.run({x: xs[k][r]})
        return np.concatenate([[c], grad.ravel()])

    def want(k, r):
        xv = xs[k][r]
        return np.concatenate([[np.tanh(W0 @ xv).sum()], np.outer(1 - np.tanh(W0 @ xv) ** 2, xv).ravel()])

    assert hammer(run_one, want) == []


def test_one_lisp_machine_many_threads_walked_and_replayed():
    for walks in (10**6, 0):
        g, W, x, cost, W0, xs = layer()
        m = ev.LispMachine(g, cost=cost, outputs=[cost],
                           replay_cache=ev.replay.ReplayCache(walks_before_compile=walks))
        assert hammer(lambda k, r: m.run({x: xs[k][r]})[0], lambda k, r: np.tanh(W0 @ xs[k][r]).sum()) == []


def test_lisp_machines_of_their_own_graphs_share_one_replay_cache():
    cache = ev.replay.ReplayCache(walks_before_compile=2)
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((8, 8))
    xs = [[rng.standard_normal(8) for _ in range(RUNS)] for _ in range(THREADS)]

    def run_one(k, r):
        g = ev.Graph()
        W = g.matrix("W", (8, 8), value=W0)
        x = g.vector("x", 8)
        cost = ev.sum(ev.tanh(W @ x))
        (c,) = ev.LispMachine(g, cost=cost, replay_cache=cache).run({x: xs[k][r]})
        return np.concatenate([[c], W.grad.ravel()])

    def want(k, r):
        xv = xs[k][r]
        return np.concatenate([[np.tanh(W0 @ xv).sum()], np.outer(1 - np.tanh(W0 @ xv) ** 2, xv).ravel()])

    assert hammer(run_one, want) == []
    assert cache.stats()["compiled"] == 1


def test_one_traced_function_many_threads_different_feeds():
    g, W, x, cost, W0, xs = layer()
    f = ev.function(lambda xv: ev.sum(ev.tanh(W0 @ xv)))
    assert hammer(lambda k, r: f(xs[k][r]), lambda k, r: np.tanh(W0 @ xs[k][r]).sum()) == []
    assert f.trace_count == 1
