"""The thread policy (compiler/threads.py): BLAS threads per matrix product from its shape,
applied while a program runs and restored after it; threads of a fused kernel; overrides.

The run-time checks read the BLAS's own thread setting through threadpoolctl from inside
a run (a recording op placed after each product), so they need nothing but numpy's BLAS.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import exprvm as ev
from exprvm.compiler import compile_graph, fusion, threads
from exprvm.kernels import gemm
from exprvm.compiler.lowering.fused import FusedGroup

F32 = np.float32
# NOTE: the BLAS tests multiply float64: float32 products the policy runs on one thread
# go to exprvm's own C product where it is built (test_float32_products_...).
F64 = np.float64
CTL = threads.blas_control()
needs_blas = pytest.mark.skipif(CTL is None, reason="no BLAS threadpoolctl can control")
needs_cores = pytest.mark.skipif(threads.cores() < 2, reason="one core: every count is 1")


def test_policy_gives_small_products_one_thread_and_big_ones_the_cap():
    p = threads.Policy(max_threads=4)
    assert p.blas_threads(2 * 32 * 128 * 128) == 1             # a batch-32 RNN step
    assert p.blas_threads(3 * threads.BLAS_FLOPS_PER_THREAD) == 3
    assert p.blas_threads(10**12) == 4
    assert threads.Policy(max_threads=1).blas_threads(10**12) == 1
    assert p.fused_threads(1000) == 1
    assert p.fused_threads(10**9) == 4
    assert threads.resolve(2) == threads.Policy(max_threads=2)
    assert threads.resolve(None) is threads.current()


def test_flops_of_the_products_a_program_runs():
    g = ev.Graph()
    a = g.matrix("a", (8, 16), dtype=F32)
    b = g.matrix("b", (16, 4), dtype=F32, value=np.ones((16, 4), F32))
    y = ev.tanh(a @ b)
    m = ev.TapeMachine(g, [y])
    (k, n), = m.program.blas_threads
    ins = m.program.instrs[k]
    assert ins.op == "matmul" and threads.flops(ins, m.program.registers) == 2 * 8 * 16 * 4 and n == 1


def _probe_program(small, big):
    """A program with a small product, a big one and a small one; after each of the first
    two, an op that records the BLAS's thread setting at that moment (the setting found
    when the run started comes back after the last product)."""
    seen = []

    def record(x):
        seen.append(CTL.get())
        return x

    name = f"record_threads_{len(ev.OPS)}"
    ev.defop(name, record, lambda x: (x.shape, x.dtype), row=ev.Row((("f", (2,), 0.0, 1.0),), grad=False))
    g = ev.Graph()
    a = g.matrix("a", small, dtype=F64, value=np.full(small, 0.01, F64))
    A = g.matrix("A", big, dtype=F64, value=np.full(big, 0.01, F64))
    s = ev.apply(name, a @ a)
    t = ev.apply(name, A @ (A + ev.sum(s)))
    return g, ev.sum(a @ (a + ev.sum(t))), seen


@needs_blas
@needs_cores
def test_each_product_runs_with_its_threads_and_the_setting_comes_back():
    g, cost, seen = _probe_program((16, 16), (400, 400))
    m = ev.TapeMachine(g, [cost])
    before = CTL.get()
    m.run()
    assert seen[-2:] == [1, min(before, threads.current().blas_threads(2 * 400 ** 3))]
    assert CTL.get() == before
    m.run()
    assert seen[-2:] == seen[-4:-2] and CTL.get() == before


@needs_blas
def test_a_pinned_blas_pins_exprvm_too():
    from threadpoolctl import threadpool_limits
    g, cost, seen = _probe_program((16, 16), (400, 400))
    m = ev.TapeMachine(g, [cost])
    with threadpool_limits(limits=1, user_api="blas"):
        m.run()
        assert seen[-2:] == [1, 1] and CTL.get() == 1


@needs_blas
def test_threads_option_caps_the_policy():
    g, cost, seen = _probe_program((16, 16), (400, 400))
    m = ev.TapeMachine(g, [cost], threads=1)
    m.run()
    assert seen[-2:] == [1, 1]
    assert [n for _, n in m.program.blas_threads] == [1, 1, 1]


def test_a_fused_kernel_splits_only_big_groups():
    group = FusedGroup(shape=(512, 512), inputs=(("full", False),),
                       members=(("tanh", (), (("in", 0),)), ("sigmoid", (), (("v", 0),))), outputs=(1,))
    with threads.using(threads.Policy(max_threads=2)):
        assert threads.current().fused_threads(group.work()) == 2
        small = FusedGroup(shape=(32, 128), inputs=group.inputs, members=group.members, outputs=(1,))
        assert threads.current().fused_threads(small.work()) == 1
    assert threads.current() == threads.Policy() or threads.current() is not None


def test_a_compile_reads_the_caps_once(monkeypatch):
    """The environment and the CPUs are asked once per compile, not once per fused kernel
    (a big compile lowers thousands); the counts are the policy's own."""
    if not fusion.available()[0]:
        pytest.skip(fusion.available()[1])
    calls = []
    real = threads._omp_cap
    monkeypatch.setattr(threads, "_omp_cap", lambda: calls.append(1) or real())
    g = ev.Graph()
    a = g.tensor("a", (64, 64), F32)
    x = a
    for _ in range(4):              # fused groups split by products: several kernels
        x = ev.tanh(ev.sigmoid(x) * 2.0) @ a
    prog = compile_graph(g, [x], fuse="sync")
    assert sum(ins.op == "fused" for ins in prog.instrs) >= 3
    assert len(calls) == 1
    with threads.using(threads.Policy(max_threads=3)) as pinned:
        assert pinned.caps == threads.Policy(max_threads=3).caps()
        assert pinned.fused_threads(10**9) == threads.Policy(max_threads=3).fused_threads(10**9)


def test_environment_caps_every_count():
    code = ("from exprvm.compiler import threads; p = threads.Policy(); "
            "print(p.cap, p.blas_threads(10**12), p.fused_threads(10**12))")
    env = dict(os.environ, EXPRVM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("EXPRVM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split()[2] == "1"


def test_set_policy_changes_later_compiles():
    old = threads.current()
    try:
        threads.set_policy(1)
        g = ev.Graph()
        a = g.matrix("a", (300, 300), dtype=F64)
        m = ev.TapeMachine(g, [a @ a])
        assert [n for _, n in m.program.blas_threads] == [1]
    finally:
        threads.set_policy(old)


def test_float32_products_on_one_thread_go_to_the_c_product_the_rest_to_the_blas(gemm_path):
    rng = np.random.default_rng(0)
    g = ev.Graph()
    h = g.matrix("h", (32, 128), dtype=F32, value=rng.standard_normal((32, 128)).astype(F32))
    w = g.matrix("w", (128, 512), dtype=F32, value=rng.standard_normal((128, 512)).astype(F32))
    big = g.matrix("big", (400, 400), dtype=F32, value=rng.standard_normal((400, 400)).astype(F32))
    row = g.matrix("row", (1, 128), dtype=F32, value=rng.standard_normal((1, 128)).astype(F32))
    outs = [h @ w, ev.transpose(h) @ (h @ w), big @ big, row @ w]
    cases = ((2, ["c", "c", "numpy", "numpy"]), (1, ["c", "c", "c", "numpy"]))
    if gemm_path == "blas":     # the gate closed: every product on the BLAS
        cases = tuple((cap, ["numpy"] * 4) for cap, _ in cases)
    for cap, want in cases:
        if cap == 2 and (threads.cores() < 2 or CTL is None or CTL.get() < 2):
            continue        # the 400 x 400 product gets one thread here too
        m = ev.TapeMachine(g, outs, threads=cap)
        kinds = [ins.kernel for ins in m.program.instrs if ins.op == "matmul"]
        assert kinds == want, (cap, kinds)
        m.run()
        hv, wv, bv, rv = (x.value.astype(np.float64) for x in (h, w, big, row))
        for got, ref in zip(outs, [hv @ wv, hv.T @ (hv @ wv), bv @ bv, rv @ wv]):
            np.testing.assert_allclose(got.value, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_only_a_program_with_blas_products_looks_for_the_blas(monkeypatch):
    """Finding the BLAS (threadpoolctl's scan of the loaded libraries) costs a process
    about 10 ms: a compile with no product to give threads to does not ask for it."""
    asked = []
    monkeypatch.setattr(threads, "blas_control", lambda: asked.append(1) or CTL)
    g = ev.Graph("elementwise")
    x = g.vector("x", 4, F64, value=np.arange(4.0))
    ev.TapeMachine(g, [ev.tanh(x) * 2.0]).run()
    assert asked == []
    a = g.matrix("a", (3, 3), F64, value=np.eye(3))
    prog = compile_graph(g, [a @ a], fuse=False)
    assert prog.blas_threads and asked == [1]
