"""Tiered compilation (compiler/tiers.py): a program whose fused kernels are not built
yet runs unfused at once, its kernels build in the background, and the fused program is
swapped in between two runs with the same values to the last bit."""
import gc
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest

import exprvm as ev
from exprvm.compiler import compile_graph, tiers
from exprvm.kernels import generated

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import models  # noqa: E402

pytestmark = pytest.mark.skipif(not generated.available()[0],
                                reason=f"fused kernels unavailable: {generated.available()[1]}")
WAIT = 300      # seconds a background build may take on a busy machine


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    """An empty kernel cache, and nothing loaded in this process: every kernel is new."""
    monkeypatch.setenv("EXPRVM_CACHE_DIR", str(tmp_path))
    generated._reset_for_tests()
    yield tmp_path
    tiers.wait_all(WAIT)
    monkeypatch.undo()
    generated._reset_for_tests()


def _ops(prog):
    return [i.op for i in prog.instrs]


def _lstm():
    w, data = models.weights_and_data("lstm_b32", small=True)
    m = models.graph("lstm_b32", w, small=True)
    return m, m.feeds(data)


def _values(m):
    return [np.array(m.cost.value, copy=True)] + [p.grad.copy() for p in m.params]


def test_a_cold_program_runs_unfused_then_swaps_in_its_fused_form_with_the_same_bits(cold_cache):
    m, feeds = _lstm()
    tm = ev.TapeMachine(m.graph, [m.cost])
    first = tm.program
    assert first.tier == "unfused" and "fused" not in _ops(first) and first.verify()
    assert first.upgrade is not None and "; tier: unfused (" in str(first)
    tm.run(feeds)
    before = _values(m)
    assert first.upgrade.wait(WAIT) and first.upgrade.state == "ready", first.upgrade.error
    fused = first.upgraded()
    assert fused is not None and fused.tier == "fused" and "fused" in _ops(fused) and fused.verify()
    assert tm.program is first                  # nothing changes under a run's feet ...
    tm.run(feeds)
    assert tm.program is fused                  # ... the next run swaps
    after = _values(m)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)     # to the last bit
    assert str(tm.program).rstrip().endswith("; tier: fused")
    tm.run(feeds)                               # and it keeps running, unchanged
    for a, b in zip(before, _values(m)):
        np.testing.assert_array_equal(a, b)


def test_a_warm_cache_compiles_fused_at_once_and_sync_waits(cold_cache):
    m, feeds = _lstm()
    synced = ev.TapeMachine(m.graph, [m.cost], fuse="sync")
    assert synced.program.tier == "fused" and synced.program.upgrade is None
    assert "fused" in _ops(synced.program)
    again = ev.TapeMachine(m.graph, [m.cost])        # its kernels are in the cache now
    assert again.program.tier == "fused" and again.program.upgrade is None
    off = ev.TapeMachine(m.graph, [m.cost], fuse=False)
    assert off.program.tier == "single" and "fused" not in _ops(off.program)
    for machine in (synced, again, off):
        machine.run(feeds)
    with pytest.raises(ev.CompileError, match="fuse='fast'"):
        compile_graph(m.graph, [m.cost], fuse="fast")


def test_values_agree_across_tiers_on_random_elementwise_graphs(cold_cache):
    """The unfused tier runs the kernel ops as C kernels and the arithmetic as numpy;
    the fused kernels must round as both do (ops with a C kernel and arithmetic only)."""
    rng = np.random.default_rng(7)
    unary = [ev.tanh, ev.sigmoid, ev.exp, ev.softplus, ev.square, ev.negative]
    binary = [ev.add, ev.subtract, ev.multiply, ev.maximum, ev.minimum]
    for trial in range(6):
        dtype = (np.float32, np.float64)[trial % 2]
        g = ev.Graph()
        xs = [g.tensor(f"x{i}", (3, 4), dtype, value=rng.uniform(-1.5, 1.5, (3, 4)).astype(dtype))
              for i in range(3)]
        pool = list(xs)
        for _ in range(8):
            a, b = pool[rng.integers(len(pool))], pool[rng.integers(len(pool))]
            if rng.random() < 0.5:
                pool.append(unary[rng.integers(len(unary))](ev.tanh(a)))
            else:
                pool.append(binary[rng.integers(len(binary))](a, b) * 0.5)
        cost = ev.sum(pool[-1] * pool[-2]) + ev.sum(pool[-3]) + ev.sum(xs[0] * xs[1] - xs[2])
        grads = ev.grad(cost, xs)
        tm = ev.TapeMachine(g, [cost] + grads)
        tm.run()
        before = [np.array(n.value, copy=True) for n in [cost] + grads]
        assert tm.program.tier in ("unfused", "fused")
        if tm.program.upgrade is not None:
            assert tm.program.upgrade.wait(WAIT), tm.program.upgrade.error
        tm.run()
        assert tm.program.tier == "fused"
        for a, n in zip(before, [cost] + grads):
            np.testing.assert_array_equal(a, n.value)


def test_a_loop_body_is_upgraded_with_its_loop(cold_cache, rng):
    g = ev.Graph()
    W = g.matrix("W", (3, 3), value=rng.normal(size=(3, 3)) * 0.5)
    h0 = g.vector("h0", 3, value=rng.normal(size=3))
    xs = g.matrix("xs", (6, 3))

    def step(h, x):
        h = ev.tanh(W @ h + x) * ev.sigmoid(x - h)
        return h, h

    h, ys = ev.scan(step, h0, xs)
    cost = ev.sum(h * h) + ev.sum(ys)
    gW, = ev.grad(cost, [W])
    tm = ev.TapeMachine(g, [cost, gW])
    first = tm.program
    assert first.tier == "unfused" and first.verify()
    assert _bodies(first) and all("fused" not in _ops(b) for b in _bodies(first))
    X = rng.normal(size=(6, 3))
    tm.run({xs: X})
    before = [np.array(cost.value, copy=True), np.array(gW.value, copy=True)]
    assert first.upgrade.wait(WAIT) and first.upgrade.state == "ready", first.upgrade.error
    tm.run({xs: X})
    fused = tm.program
    assert fused.tier == "fused" and fused.verify()
    assert any("fused" in _ops(b) for b in _bodies(fused)), str(fused)
    np.testing.assert_array_equal(before[0], cost.value)
    np.testing.assert_array_equal(before[1], gW.value)


def _bodies(prog):
    """Every body Program nested in prog, at any depth."""
    out = []
    for b in prog.bodies():
        out += [b] + _bodies(b)
    return out


def test_branch_and_while_bodies_swap_with_their_program_bit_for_bit(cold_cache, rng):
    g = ev.Graph()
    f32 = np.float32
    W = g.matrix("W", (32, 32), value=(rng.normal(size=(32, 32)) * 0.2).astype(f32), dtype=f32)
    x = g.vector("x", 32, dtype=f32)
    y = ev.cond(ev.sum(x) > 0.0, lambda a: ev.tanh(W @ a + 0.5) * ev.sigmoid(a),
                lambda a: ev.softplus(a * 2.0 - 1.0) * a, x)
    z = ev.while_loop(lambda c: ev.sum(c) < 40.0, lambda c: c + ev.sigmoid(c * 1.5) * ev.exp(-c * c),
                      ev.abs(y) + 0.1, max_iterations=40)
    cost = ev.sum(z * z) + ev.sum(y)
    gW, = ev.grad(cost, [W])
    tm = ev.TapeMachine(g, [cost, gW])
    first = tm.program
    assert first.tier == "unfused" and first.verify()
    assert len(_bodies(first)) >= 4 and all("fused" not in _ops(b) for b in _bodies(first))
    feeds = [{x: rng.normal(size=32).astype(f32) + 0.5}, {x: -np.abs(rng.normal(size=32)).astype(f32)}]
    before = [[np.array(v, copy=True) for v in tm.run(f)] for f in feeds]
    assert first.upgrade.wait(WAIT) and first.upgrade.state == "ready", first.upgrade.error
    after = [[np.array(v, copy=True) for v in tm.run(f)] for f in feeds]
    fused = tm.program
    assert fused is not first and fused.tier == "fused" and fused.verify()
    bodies = _bodies(fused)
    assert len(bodies) == len(_bodies(first)) and sum("fused" in _ops(b) for b in bodies) >= 3, str(fused)
    for b, a in zip(before, after):
        for u, v in zip(b, a):
            np.testing.assert_array_equal(u, v)     # to the last bit, each branch taken


def _deferred(prog):
    return any("fusion deferred" in n for n in prog.notes)


def test_a_program_never_fused_skips_the_analysis_until_its_build_has_done_it(cold_cache):
    m, feeds = _lstm()
    first = compile_graph(m.graph, [m.cost])
    # no analysis: no kernel is known yet, none was looked up
    assert first.tier == "unfused" and _deferred(first) and first.upgrade.kernels == []
    text = first.upgrade.describe()     # (a loaded machine may have finished the build already)
    assert text.startswith("fused kernels ") or first.upgrade.state == "ready"
    assert first.upgrade.wait(WAIT) and first.upgrade.state == "ready", first.upgrade.error
    built = first.upgrade.kernels
    assert built and not generated.lookup(built)        # the build found and built them
    assert 0 < len(built) <= sum(i.op == "fused" for i in first.upgraded().instrs)   # (shared ones once)
    second = compile_graph(m.graph, [m.cost])           # known now: fused at once
    assert second.tier == "fused" and second.upgrade is None and not _deferred(second)
    assert str(second).split("; tier")[0] == str(first.upgraded()).split("; tier")[0]


KNOWN_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {bench!r})
    import exprvm as ev, models
    from exprvm.compiler import compile_graph
    w, data = models.weights_and_data("lstm_b32", small=True)
    m = models.graph("lstm_b32", w, small=True)
    p = compile_graph(m.graph, [m.cost])
    print(p.tier, any("fusion deferred" in n for n in p.notes))
""")


def test_another_process_knows_a_program_fused_with_the_same_cache(cold_cache):
    script = KNOWN_SCRIPT.format(bench=str(ROOT / "benchmarks"))
    env = dict(os.environ, EXPRVM_CACHE_DIR=str(cold_cache))

    def other():
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                             cwd=str(ROOT), timeout=WAIT)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert other() == ["unfused", "True"]               # a cold cache: no analysis
    m, _ = _lstm()
    compile_graph(m.graph, [m.cost], fuse="sync")       # builds its kernels, and says so on disk
    assert other() == ["fused", "False"]


PARSER_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import exprvm as ev
    print("pycparser" in sys.modules)
    g = ev.Graph("g")
    x = g.vector("x", 64, dtype="float32")
    tm = ev.TapeMachine(g, outputs=[ev.tanh(x * 2.0) + ev.exp(x)], fuse=sys.argv[1])
    tm.run({x: np.linspace(-1, 1, 64, dtype=np.float32)})
    print(tm.program.tier, "pycparser" in sys.modules)
""")


def test_a_process_runs_a_cached_fused_program_without_the_c_parser(cold_cache):
    """Importing exprvm, and compiling and running a program whose fused kernels are in
    the disk cache, import no C parser (cffi's pycparser): the kernels' own modules bind
    their buffers. `import exprvm` used to parse the C kernels' headers (50 ms) and make an
    FFI() (40 ms: the parser's import) in every process."""
    env = dict(os.environ, EXPRVM_CACHE_DIR=str(cold_cache))

    def other(fuse):
        out = subprocess.run([sys.executable, "-c", PARSER_SCRIPT, fuse], capture_output=True, text=True,
                             env=env, cwd=str(ROOT), timeout=WAIT)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert other("sync") == ["False", "fused", "True"]      # building the kernel parses its C
    assert other("tiered") == ["False", "fused", "False"]


def test_a_known_program_whose_kernels_are_gone_builds_them_in_the_background(cold_cache):
    m, feeds = _lstm()
    ref = compile_graph(m.graph, [m.cost], fuse="sync")
    for lib in (cold_cache / "fused").glob("*.lib"):    # the kernels' index files removed by hand
        lib.unlink()
    generated._reset_for_tests()                        # (and forgotten by this process)
    prog = compile_graph(m.graph, [m.cost])
    # the fingerprint is known, so the analysis ran and named the missing kernels
    assert prog.tier == "unfused" and 0 < len(prog.upgrade.kernels) <= sum(i.op == "fused" for i in ref.instrs)
    assert prog.upgrade.wait(WAIT) and prog.upgrade.state == "ready", prog.upgrade.error
    assert str(prog.upgraded()).split("; tier")[0] == str(ref).split("; tier")[0]


def test_a_program_with_nothing_to_fuse_is_not_deferred(cold_cache, rng):
    g = ev.Graph()
    a, b = g.matrix("a", (3, 4), value=rng.normal(size=(3, 4))), g.matrix("b", (4, 2), value=rng.normal(size=(4, 2)))
    prog = compile_graph(g, [ev.tanh(a @ b)])
    assert prog.upgrade is None and not _deferred(prog)


def test_the_profile_and_disassembly_say_which_tier_ran(cold_cache):
    m, feeds = _lstm()
    tm = ev.TapeMachine(m.graph, [m.cost])
    prof = tm.profile(feeds, runs=2)
    assert prof.tier == tm.program.tier and f"tier: {prof.tier}" in str(prof)
    tiers.wait_all(WAIT)
    tm.run(feeds)
    prof = tm.profile(feeds, runs=2)
    assert prof.tier == "fused" and "tier: fused" in str(prof).splitlines()[0]


def test_a_dropped_programs_build_is_skipped(cold_cache, monkeypatch):
    builder = tiers._Builder(1)         # one worker: the second build waits behind the first
    monkeypatch.setattr(tiers, "_BUILDER", builder)
    m, _ = _lstm()
    built = generated.STATS["kernels_compiled"]     # (before: the kept build may start at once)
    kept = compile_graph(m.graph, [m.cost])
    g = ev.Graph()
    x = g.vector("x", 7)
    y = ev.sum(ev.sigmoid(x * 3.0) * ev.tanh(x))
    dropped = compile_graph(g, [y])
    assert kept.tier == dropped.tier == "unfused"
    ref = weakref.ref(dropped.upgrade)
    del dropped
    gc.collect()
    assert ref() is None                # the queue does not keep a dropped program's build
    assert kept.upgrade.wait(WAIT) and kept.upgrade.state == "ready", kept.upgrade.error
    builder.shutdown(cancel=False)      # (cancelling stops this process's builds for good)
    assert kept.upgrade.kernels         # the kept program's kernels, and no other, were built
    assert generated.STATS["kernels_compiled"] - built == len(kept.upgrade.kernels)
    again = compile_graph(g, [y])       # and the dropped one is still unknown
    assert again.tier == "unfused" and any("fusion deferred" in n for n in again.notes)


EXIT_SCRIPT = textwrap.dedent("""
    import atexit, os, sys
    sys.path.insert(0, {bench!r})
    import exprvm as ev, models
    from exprvm.kernels import generated
    w, data = models.weights_and_data("lstm_b32", small=True)
    m = models.graph("lstm_b32", w, small=True)
    tm = ev.TapeMachine(m.graph, [m.cost])
    tm.run(m.feeds(data))
    import time
    end = time.monotonic() + 120
    while not generated.compilers_running() and time.monotonic() < end:   # gcc is running now
        time.sleep(0.005)
    print(tm.program.tier, tm.program.upgrade.state, float(m.cost.value), generated.compilers_running())
""")


def test_a_process_exiting_with_a_build_in_flight_exits_cleanly(tmp_path):
    env = dict(os.environ, EXPRVM_CACHE_DIR=str(tmp_path))
    script = EXIT_SCRIPT.format(bench=str(ROOT / "benchmarks"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=str(ROOT), timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    tier, state, cost, running = out.stdout.split()
    assert tier == "unfused" and state == "building" and np.isfinite(float(cost)) and running == "1"
    root = tmp_path / "fused"
    left = [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".build-"))] if root.exists() else []
    assert not left, left


def test_the_fingerprint_tells_apart_what_decides_a_kernel_and_is_the_same_in_another_process():
    from exprvm.compiler import ir, known

    def fp(build):
        g = ev.Graph()
        x = g.matrix("x", (3, 4), dtype=np.float32)
        out = build(x)
        vals = ir.build(ev.ancestors([out]))
        return known.fingerprint(ir.live_vals([vals[out.id]]))

    base = fp(lambda x: ev.tanh(x * 2.0) + 1.0)
    assert base == fp(lambda x: ev.tanh(x * 2.0) + 1.0)
    assert base != fp(lambda x: ev.tanh(x * 3.0) + 1.0)            # a literal in the source
    assert base != fp(lambda x: ev.sigmoid(x * 2.0) + 1.0)         # another op
    assert base != fp(lambda x: ev.tanh(x[:, :2] * 2.0) + 1.0)     # another shape
    assert base != fp(lambda x: ev.tanh(x * 2.0) + ev.tanh(x))     # another operand
    assert fp(lambda x: ev.clip(x, 0.0, 1.0)) != fp(lambda x: ev.clip(x, 0.0, 2.0))   # a param
    code = ("import numpy as np, exprvm as ev\nfrom exprvm.compiler import ir, known\n"
            "g = ev.Graph(); x = g.matrix('x', (3, 4), dtype=np.float32); out = ev.tanh(x * 2.0) + 1.0\n"
            "vals = ir.build(ev.ancestors([out])); print(known.fingerprint(ir.live_vals([vals[out.id]])))")
    for seed in ("1", "2"):     # str hashes differ between these processes; the fingerprint may not
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                             env=dict(os.environ, PYTHONHASHSEED=seed), timeout=WAIT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == base
