"""Profiles: a TapeMachine's per-instruction times (table and data, and the program drawn
coloured by time), a LispMachine's per-op times of a walk. No timing thresholds: the
tests check the structure, that every instruction is timed, and that the run's results
are the ones an unprofiled run gives."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import exprvm as ev

F32 = np.float32


def rnn_step():
    rng = np.random.default_rng(0)
    g = ev.Graph()
    W = g.matrix("W", (8, 8), dtype=F32, value=rng.normal(size=(8, 8)).astype(F32) * 0.3)
    U = g.matrix("U", (8, 5), dtype=F32, value=rng.normal(size=(8, 5)).astype(F32) * 0.3)
    x = g.matrix("x", (3, 5), dtype=F32)
    h = g.constant(np.zeros((3, 8), F32))
    for t in range(3):
        h = ev.tanh(h @ W.T + x @ U.T)
    cost = ev.mean(ev.square(h))
    ev.grad(cost, [W, U])
    return g, W, U, x, cost


def test_tape_profile_times_every_instruction_and_leaves_results_alone():
    g, W, U, x, cost = rnn_step()
    m = ev.TapeMachine(g, outputs=[cost])
    feed = {x: np.ones((3, 5), F32)}
    m.run(feed)
    want_cost, want_gW = float(cost.value), W.grad.copy()
    steps = list(m._steps)
    prof = m.profile(feed, runs=3)
    assert len(prof.rows) == len(m.program.instrs) and prof.runs == 3
    assert [r.index for r in prof.rows] == list(range(len(prof.rows)))
    assert all(0 <= r.min_s <= r.median_s for r in prof.rows) and sum(r.median_s > 0 for r in prof.rows) > 1
    assert sum(r.share for r in prof.rows) == pytest.approx(1.0)
    assert prof.total_s == pytest.approx(sum(r.median_s for r in prof.rows)) and prof.run_s > 0
    assert [r.text for r in prof.rows] == [ins.text() for ins in m.program.instrs]
    assert any("test_profile.py" in r.site for r in prof.rows)     # the user's line
    assert float(cost.value) == pytest.approx(want_cost) and np.allclose(W.grad, want_gW)
    assert all(a is b for a, b in zip(m._steps, steps))   # its own steps again, unwrapped

    table = str(prof)
    lines = table.splitlines()
    assert lines[0].startswith(f"profile: {len(prof.rows)} instructions, median of 3 runs")
    times = [float(ln.split()[1]) for ln in lines[2:]]
    assert times == sorted(times, reverse=True) and len(times) == len(prof.rows)
    assert re.search(r"\d+\.\d%", lines[2])
    assert "more instructions" in prof.table(top=2) and len(prof.table(top=2).splitlines()) == 5
    ops = prof.by_op()
    assert sum(n for n, _, _ in ops.values()) == len(prof.rows)
    assert list(ops.values())[0][1] == max(s for _, s, _ in ops.values())
    assert prof.records()[0].keys() >= {"index", "text", "op", "median_s", "share", "site"}


def test_profile_follows_inputs_fed_by_reference_and_new_feeds():
    g = ev.Graph()
    x = g.matrix("x", (64, 128), dtype=F32)     # large: read in place (rebinding its steps)
    w = g.vector("w", 128, dtype=F32, value=np.ones(128, F32))
    y = ev.sum(ev.tanh(x * w))
    m = ev.TapeMachine(g, outputs=[y])
    a, b = np.full((64, 128), 0.5, F32), np.full((64, 128), -0.25, F32)
    prof = m.profile({x: a}, runs=2)
    assert len(prof.rows) == len(m.program.instrs)
    m.run({x: b})
    assert float(y.value) == pytest.approx(float(np.tanh(b).sum()), rel=1e-5)
    m.profile({x: b}, runs=2)
    m.run({x: a})
    assert float(y.value) == pytest.approx(float(np.tanh(a).sum()), rel=1e-5)


def test_render_colours_the_program_by_time(tmp_path):
    g, W, U, x, cost = rnn_step()
    m = ev.TapeMachine(g, outputs=[cost])
    prof = m.profile({x: np.ones((3, 5), F32)}, runs=2)
    src = ev.to_dot(m.program, profile=prof).source
    slowest = max(prof.rows, key=lambda r: r.median_s)
    assert 'fillcolor="0.000 1.000 1.000"' in src                      # the slowest is red
    assert f"{slowest.median_s * 1e6:.1f} us" in src and "in instructions" in src
    svg = ev.render(m.program, tmp_path / "prof.svg", profile=prof)
    assert open(svg).read().lstrip().startswith(("<?xml", "<svg"))
    other = ev.TapeMachine(g, outputs=[cost])
    with pytest.raises(ev.ExprError, match="another program"):
        ev.to_dot(other.program, profile=prof)


def test_profile_argument_errors():
    g, W, U, x, cost = rnn_step()
    m = ev.TapeMachine(g, outputs=[cost])
    with pytest.raises(ev.ExprError, match="runs must be an int >= 1"):
        m.profile({x: np.ones((3, 5), F32)}, runs=0)
    with pytest.raises(ev.FeedError):
        m.profile({x: np.ones((2, 5), F32)}, runs=1)


def test_walk_profile_reports_time_per_node_kind():
    g, W, U, x, cost = rnn_step()
    lm = ev.LispMachine(g, cost=cost)
    feed = {x: np.ones((3, 5), F32)}
    prof = lm.profile(feed, runs=3)
    ops = {r.op: r for r in prof.rows}
    assert ops["tanh"].nodes == 3 and ops["matmul"].nodes == 4   # x @ U.T is built once
    assert ops["matmul"].forward_s > 0 and ops["matmul"].backward_s > 0 and ops["tanh"].backward_s >= 0
    assert sum(r.share for r in prof.rows) == pytest.approx(1.0)
    assert prof.forward_s > 0 and prof.backward_s > 0 and prof.run_s > 0
    totals = [r.total_s for r in prof.rows]
    assert totals == sorted(totals, reverse=True)
    lines = str(prof).splitlines()
    assert lines[0].startswith("walk profile:") and lines[1].split()[:2] == ["op", "nodes"]
    assert len(lines) == 2 + len(prof.rows)
    # the walk's results are a run's, and the machine replays again afterwards
    ref = ev.LispMachine(g, cost=cost, replay=False)
    gW = W.grad.copy()
    ref.run(feed)
    np.testing.assert_allclose(gW, W.grad, rtol=1e-6)
    assert lm.replay and lm._clock is None
    assert prof.records()[0].keys() >= {"op", "nodes", "forward_s", "backward_s", "total_s"}


def test_the_char_rnn_profile_script_runs_in_smoke_mode(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "profile_char_rnn.py"), "--smoke"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(root)))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^profile: \d+ instructions, median of 3 runs", out, re.M)
    assert "char_rnn.py:" in out and "walk profile:" in out and "by op:" in out
    assert (tmp_path / "out" / "char_rnn_profile.svg").stat().st_size > 1000


@pytest.mark.skipif(not ev.compiler.fusion.available()[0], reason="no fused kernels here")
def test_fused_rows_name_their_ops_as_the_disassembly_does():
    g = ev.Graph()
    x = g.vector("x", 64, dtype=F32)
    w = g.vector("w", 64, dtype=F32, value=np.ones(64, F32))
    inner = ev.sum(ev.tanh(x * w + 1.0) * ev.sigmoid(x))      # a group whose value has no node
    ev.grad(inner, [w])
    y = g.vector("y", 32, dtype=F32)
    out = ev.tanh(y * 3.0 - 2.0) * ev.exp(y)                   # a group computing a graph node
    m = ev.TapeMachine(g, outputs=[inner, out], fuse="sync")
    fused = [ins for ins in m.program.instrs if ins.op == "fused"]
    assert {ins.node is None for ins in fused} == {True, False}, m.program
    prof = m.profile({x: np.linspace(-1, 1, 64).astype(F32), y: np.ones(32, F32)}, runs=2)
    table = str(prof)
    for ins in fused:
        ops = re.search(r"fused \d+: [a-z_ ]+", ins.note).group(0).strip()
        row = next(r for r in prof.rows if r.index == m.program.instrs.index(ins))
        assert ops in row.site, (ops, row.site)
        assert any(ins.text() in ln and ops in ln for ln in table.splitlines()), table
