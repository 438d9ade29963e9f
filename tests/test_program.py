"""The compiled Program: disassembly, buffer reuse, peak bytes and the soundness checker."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import exprvm as ev
from exprvm.compiler import compile_graph
from exprvm.compiler import Instr, Program, Register

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import models  # noqa: E402

F32 = np.float32


def tanh_layer():
    g = ev.Graph()
    W = g.matrix("W", (3, 4), dtype=F32, init=ev.init.glorot_normal(seed=0))
    b = g.vector("b", 3, dtype=F32, init=ev.init.zeros())
    v = g.vector("v", 4, dtype=F32)
    h1 = ev.tanh(W @ v + b)
    cost = ev.sum(h1 * h1)
    ev.grad(cost, [W, b])
    return g, v, h1, cost


def test_disassembly_lists_instructions_registers_and_bytes():
    g, v, h1, cost = tanh_layer()
    prog = compile_graph(g, [cost], fuse=False)     # one instruction per op (no fused groups)
    text = str(prog)
    lines = text.splitlines()
    # one line per instruction, e.g. "r5 = tanh r4   ; tanh#5 (test_program.py:24)"
    inst = [ln for ln in lines if re.match(r"r\d+ = \w+", ln)]
    assert len(inst) == len(prog) == len(prog.instrs)
    tanh_line = next(ln for ln in inst if " = tanh" in ln)
    assert re.match(r"r\d+ = tanh(\[c\]|) r\d+ +; tanh#\d+ \(test_program.py:\d+\)", tanh_line)
    assert "float32[3, 4]" in text and "param" in text and "input" in text
    assert f"planned {prog.peak_bytes} B" in text and f"lower bound {prog.lower_bound} B" in text


def test_program_is_plain_data():
    g, v, h1, cost = tanh_layer()
    prog = compile_graph(g, [cost], backend="numpy")
    for ins in prog:
        assert isinstance(ins.op, str) and isinstance(ins.ins, tuple) and isinstance(ins.out, int)
        assert ins.kernel == "numpy"
        assert all(0 <= r < len(prog.registers) for r in ins.ins + (ins.out,))
    tanh = next(i for i in prog if i.op == "tanh")
    assert tanh.node is h1 and prog.registers[tanh.out].nodes[0] is h1


def test_c_backend_is_shown_per_instruction():
    if not ev.kernels.available("tanh", np.float32, "c"):
        pytest.skip("C kernels not built")
    g, v, h1, cost = tanh_layer()
    m = ev.TapeMachine(g, [cost], backend="c", fuse="sync")
    # tanh(W @ v + b): the add and tanh run as one generated kernel when a C compiler is
    # here (compiler/fusion.py), else tanh as one call of its C kernel
    op = "fused" if ev.compiler.fusion.available()[0] else "tanh"
    assert any(i.kernel == "c" and i.op == op for i in m.program), str(m.program)
    assert re.search(rf"r\d+ = {op}\[c\] r\d+", str(m.program))
    n = ev.TapeMachine(g, [cost], backend="numpy")
    assert all(i.kernel == "numpy" for i in n.program)


def long_elementwise_chain(n=40, size=1000):
    g = ev.Graph()
    x = g.vector("x", size, dtype=F32)
    y = x
    for k in range(n):
        y = ev.tanh(y * 0.5 + 0.1) if k % 2 else ev.exp(-ev.square(y))
    return g, x, y


def test_dead_intermediates_share_buffers():
    g, x, y = long_elementwise_chain()
    prog = compile_graph(g, [y], fuse=False)        # one buffer per op (fused: test_fusion.py)
    buffers = [r for r in prog.registers if r.kind == "buffer"]
    assert len(buffers) > 100
    assert prog.peak_bytes <= 2 * 4000           # a couple of live vectors, not 100+
    assert len({r.slot for r in buffers}) <= 2
    inplace = [i for i in prog if prog.registers[i.out].slot in
               {prog.root(j).slot for j in i.ins if prog.root(j).kind == "buffer"}]
    assert inplace, "elementwise ops on dying inputs should run in place"
    assert prog.verify()
    m = ev.TapeMachine(g, [y])
    xv = np.linspace(-1, 1, 1000).astype(F32)
    m.run({x: xv})
    got = y.value.copy()
    ev.LispMachine(g, outputs=[y]).run({x: xv})
    np.testing.assert_allclose(got, y.value, rtol=1e-6)


def test_views_cost_nothing_and_keep_their_base_alive():
    g = ev.Graph()
    x = g.matrix("x", (4, 6), dtype=F32)
    e = ev.exp(x)
    v = ev.transpose(e).reshape((3, 8))     # transpose then reshape: needs a copy
    w = e.reshape((6, 4))                     # a pure view of e's buffer
    t = ev.tanh(x * 2)                        # same size as e: must not reuse e's buffer
    out = ev.sum(w, axis=0) + ev.sum(t.reshape((6, 4)), axis=0) + ev.sum(v)
    prog = compile_graph(g, [out, v])
    kinds = {prog.registers[prog.index[n]].kind for n in (w,)}
    assert kinds == {"view"}
    assert sum(i.op == "reshape" for i in prog) == 1       # only the copying reshape runs
    assert prog.verify()
    m = ev.TapeMachine(g, [out, v])
    xv = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(F32)
    m.run({x: xv})
    ew = np.exp(xv)
    ref = ew.reshape(6, 4).sum(0) + np.tanh(xv * 2).reshape(6, 4).sum(0) + ew.T.reshape(3, 8).sum()
    np.testing.assert_allclose(out.value, ref, rtol=1e-5)
    np.testing.assert_allclose(v.value, ew.T.reshape(3, 8), rtol=1e-6)


def test_constants_fold_and_dead_code_goes():
    g = ev.Graph()
    x = g.vector("x", 3)
    c = ev.exp(g.constant(np.array([0.0, 1.0, 2.0]))) * 2 + 1
    unused = ev.sin(x) * 100
    y = x * c
    prog = compile_graph(g, [y])
    assert [i.op for i in prog] == ["mul"]
    assert unused not in prog.index
    m = ev.TapeMachine(g, [y])
    m.run({x: np.ones(3)})
    np.testing.assert_allclose(y.value, np.exp([0.0, 1.0, 2.0]) * 2 + 1)


@pytest.mark.parametrize("name", ["rnn_b1", "rnn_b32", "lstm_b32", "mlp", "chain_bwd"])
def test_peak_bytes_within_ten_percent_of_lower_bound(name):
    model, _, _ = models.build(name, small=True)
    # NOTE: the planner's packing of one value per register; a fused group's stored
    # results are one unit, bounded in tests/test_fusion.py
    prog = compile_graph(model.graph, [model.cost], fuse=False)
    assert prog.verify()
    assert prog.lower_bound <= prog.peak_bytes <= 1.1 * prog.lower_bound
    biggest = max(r.nbytes for r in prog.registers if r.kind == "buffer")
    assert prog.lower_bound >= biggest


def _clobber_candidates(prog):
    """(victim, writer): the victim's value is read after the writer's instruction."""
    last = {}
    for k, ins in enumerate(prog.instrs):
        for r in ins.ins:
            last[prog.root(r).id] = k
    for i, ins in enumerate(prog.instrs):
        victim = prog.registers[ins.out]
        end = last.get(victim.id, -1)
        for k in range(i + 1, end):
            writer = prog.registers[prog.instrs[k].out]
            if writer.nbytes >= victim.nbytes and victim.id not in prog.instrs[k].ins:
                return victim, writer
    raise AssertionError("no candidate")


def test_verify_catches_a_hand_edited_output_buffer():
    model, _, _ = models.build("rnn_b1", small=True)
    prog = compile_graph(model.graph, [model.cost])
    victim, writer = _clobber_candidates(prog)
    writer.slot = victim.slot                                  # write over a live value
    with pytest.raises(ev.CompileError, match="overwritten"):
        prog.verify()


def test_verify_catches_an_instruction_writing_someone_elses_register():
    g, v, h1, cost = tanh_layer()
    prog = compile_graph(g, [cost])
    prog.instrs[-1].out = prog.instrs[0].out
    with pytest.raises(ev.CompileError, match="second time"):
        prog.verify()


def test_verify_catches_partial_overlap_with_an_input():
    g = ev.Graph()
    x = g.vector("x", 8)
    y = ev.exp(x)
    z = ev.sum(y.reshape((2, 4)), axis=1)
    prog = compile_graph(g, [z])
    sum_ins = next(i for i in prog if i.op == "sum")
    out = prog.registers[sum_ins.out]
    src = prog.root(sum_ins.ins[0])
    prog.bases.append(prog.bases[src.slot] + 8)                     # inside the input, not on it
    prog.slots.append(out.nbytes)
    out.slot = len(prog.bases) - 1
    with pytest.raises(ev.CompileError, match="overlaps input"):
        prog.verify()


def _chain_registers():
    """An input, two planned (3,) buffers in slots 0 and 1, and a scalar in slot 0: the
    registers of tanh -> exp -> sum written by hand."""
    f64 = np.dtype(np.float64)
    return [Register(0, (3,), f64, "input"), Register(1, (3,), f64, "buffer", slot=0),
            Register(2, (3,), f64, "buffer", slot=1), Register(3, (), f64, "buffer", slot=0)]


def test_verify_accepts_hand_written_programs_and_rejects_reading_too_early():
    regs = _chain_registers()
    ok = Program(regs, [Instr("tanh", (0,), 1), Instr("exp", (1,), 2), Instr("sum", (2,), 3)],
                 [24, 24], [3], 48)
    assert ok.verify()
    bad = Program(regs, [Instr("tanh", (0,), 1), Instr("sum", (2,), 3), Instr("exp", (1,), 2)],
                  [24, 24], [3], 48)
    with pytest.raises(ev.CompileError, match="before it is produced"):
        bad.verify()
    clobber = Program(regs, [Instr("tanh", (0,), 1), Instr("sum", (0,), 3), Instr("exp", (1,), 2)],
                      [24, 24], [3], 48)
    with pytest.raises(ev.CompileError, match="overwritten by r3"):
        clobber.verify()


def test_verify_names_the_read_and_refuses_a_state_read_after_its_update():
    f64 = np.dtype(np.float64)
    regs = _chain_registers()
    early = Program(regs, [Instr("tanh", (0,), 1), Instr("sum", (2,), 3), Instr("exp", (1,), 2)],
                    [24, 24], [3], 48)
    with pytest.raises(ev.CompileError, match=re.escape("instruction 1 `r3 = sum r2` reads r2: r2")):
        early.verify()
    state = [Register(0, (3,), f64, "param"), Register(1, (3,), f64, "buffer", slot=0),
             Register(2, (3,), f64, "buffer", slot=1)]
    last = Program(state, [Instr("exp", (0,), 1), Instr("tanh", (0,), 2), Instr("update", (1,), 0)],
                   [24, 24], [2], 48)
    assert last.verify()
    # the state's new value written while an instruction after it still reads the old one
    read_after = Program(state, [Instr("exp", (0,), 1), Instr("update", (1,), 0), Instr("tanh", (0,), 2)],
                         [24, 24], [2], 48)
    with pytest.raises(ev.CompileError, match="updates r0 before the end of the tape"):
        read_after.verify()


def test_a_ten_thousand_node_graph_compiles():
    g = ev.Graph()
    x = g.vector("x", 4)
    for _ in range(5000):
        x = ev.tanh(x * 0.9)
    assert len(g) >= 10_000
    m = ev.TapeMachine(g, [x], fuse=False)
    assert len(m.program) == 10_000
    m.run({g.nodes[0]: np.ones(4)})
    assert np.all(np.isfinite(x.value))


# -- device placement (planned without a GPU) --------------------------------------------

def device_graph():
    g = ev.Graph()
    x = g.vector("x", 8, dtype=F32)
    w = g.vector("w", 8, dtype=F32, value=np.linspace(0.5, 1, 8, dtype=F32))
    h = ev.tanh(ev.sigmoid(x) * w)
    y = ev.sum(ev.exp(h) * 2)
    ev.grad(y, [w])
    return g, x, w, h, y


def _devices_consistent(prog):
    for ins in prog:
        dev = {prog.registers[i].device for i in ins.ins}
        out = prog.registers[ins.out].device
        if ins.op == "to_device":
            assert dev == {"cpu"} and out == "cuda"
        elif ins.op == "to_host":
            assert dev == {"cuda"} and out == "cpu"
        else:
            assert dev <= {out}, ins.text()
            assert (ins.kernel == "cuda") == (out == "cuda")


def test_device_placement_moves_values_only_where_they_cross():
    g, x, w, h, y = device_graph()
    prog = ev.TapeMachine.compile(g, [y], device="cuda")
    assert prog.verify()
    _devices_consistent(prog)
    on_gpu = [i.op for i in prog if i.kernel == "cuda" and not i.op.startswith("to_")]
    assert {"sigmoid", "tanh", "exp", "mul", "tanh_grad"} <= set(on_gpu)
    # the feed moves in first, the loss out last; parameters, constants and everything
    # between them stay on the device
    ops = [i.op for i in prog]
    assert ops[0] == "to_device" and ops[-1] == "to_host"
    assert "to_device" not in ops[1:] and "to_host" not in ops[:-1]
    assert prog.registers[prog.instrs[0].ins[0]].nodes == [x]
    assert prog.registers[[r for n, r in prog.index.items() if n is w][0]].device == "cuda"
    moved = [(i.op, i.ins[0]) for i in prog if i.op.startswith("to_")]
    assert len(moved) == len(set(moved)), "a value crossed twice in one direction"
    # the loss comes back to the host; w's gradient stays beside w for the device solvers
    assert {prog.registers[rid].device for _, rid in prog.values if _ is y} == {"cpu"}
    assert {prog.registers[rid].device for _, rid in prog.grads} == {"cuda"}
    assert "to_device r" in str(prog) and "to_host r" in str(prog) and "tanh[cuda]" in str(prog)


def test_use_cuda_for_places_only_the_named_ops():
    g, x, w, h, y = device_graph()
    prog = ev.TapeMachine.compile(g, [y], use_cuda_for=("tanh",))
    assert prog.verify()
    _devices_consistent(prog)
    gpu = sorted({i.op for i in prog if i.kernel == "cuda" and not i.op.startswith("to_")})
    assert gpu == ["tanh", "tanh_grad"] or gpu == ["tanh"]
    assert sum(i.op == "to_device" for i in prog) == sum(i.op == "to_host" for i in prog) >= 1
    host = ev.TapeMachine.compile(g, [y])
    assert all(r.device == "cpu" for r in host.registers)
    with pytest.raises(ev.BackendError, match="no CUDA kernels for"):
        ev.TapeMachine.compile(g, [y], use_cuda_for=("matmul",))


def test_device_buffers_are_reused_only_between_equal_shapes():
    g = ev.Graph()
    x = g.vector("x", 64, dtype=F32)
    y = x
    for _ in range(10):
        y = ev.tanh(ev.exp(y) * ev.sigmoid(y))
    prog = ev.TapeMachine.compile(g, [y], device="cuda")
    assert prog.verify()
    cuda = [r for r in prog.registers if r.device == "cuda"]
    assert len(cuda) > 20 and len({r.slot for r in cuda}) <= 4
    for s in {r.slot for r in cuda}:
        assert len({(r.shape, r.dtype) for r in cuda if r.slot == s}) == 1
