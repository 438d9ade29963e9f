"""Generated fused kernels (kernels/generated.py, compiler/lowering/fused.py) and the pass
that makes them (compiler/fusion.py).

Kernels: random groups (hypothesis) against the per-op numpy path written out here, in
float32 and float64, with NaN/Inf inputs, strided (gate-slice) inputs, bias rows, columns,
scalars, in-place outputs, both result layouts and a threaded split; every ev_math op
within the C kernels' ulp bounds of numpy. Pass: the TapeMachine with fusion agrees with
itself without it and with the LispMachine, on the benchmark models and on random graphs
that mix elementwise ops with reductions and matrix products (groups must stay convex);
the disassembly names every fused op and line; trace and the watches see every value.
Cache: a second process compiles nothing; no compiler means numpy per op, as before.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import exprvm as ev
from exprvm.compiler import fusion
from exprvm.compiler.lowering.fused import FusedGroup
from exprvm.compiler.lowering.scalar import SCALAR
from exprvm.core import OPS
from exprvm.errors import KernelError
from exprvm.kernels import generated

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import models  # noqa: E402
from budget import examples
from requires import require

pytestmark = pytest.mark.skipif(not generated.available()[0],
                                reason=f"fused kernels unavailable: {generated.available()[1]}")
F32, F64 = np.float32, np.float64
EPS = {F32: np.finfo(F32).eps, F64: np.finfo(F64).eps}
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30, 3.0, -3.0, 0.5]


# -- the per-op numpy path, written out independently -------------------------------------

def per_op(group, arrays, dtype):
    """Every member's numpy impl in order: (stored results, elementwise max |finite value|)."""
    vals = []
    scale = np.zeros(group.shape)
    with np.errstate(all="ignore"):
        for op, params, refs in group.members:
            args = []
            for kind, x in refs:
                if kind == "in":
                    args.append(arrays[x])
                elif kind == "v":
                    args.append(vals[x])
                else:
                    args.append(np.asarray(x, bool if isinstance(x, bool) else dtype))
            v = np.asarray(OPS[op].impl(*args, **dict(params)))
            vals.append(v)
            if v.dtype != bool:
                a = np.abs(np.broadcast_to(v, group.shape).astype(np.float64))
                scale = np.maximum(scale, np.where(np.isfinite(a), a, 0))
    outs = [np.broadcast_to(vals[j], group.shape).astype(dtype) for j in group.outputs]
    return outs, scale


def stored(group, out):
    """The stored members out of a kernel's output array."""
    return [out[group.output_index(q)] for q in range(len(group.outputs))]


def assert_close(got, want, scale, dtype, what):
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"NaNs differ: {what}")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"infinities differ: {what}")
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg=f"infinities differ: {what}")
    ok = ~(nan | inf)
    tol = 1e-5 if dtype == F32 else 1e-12
    atol = 256 * EPS[dtype] * (1 + scale)
    diff = np.abs(got[ok].astype(np.float64) - want[ok])
    bad = diff > tol * np.abs(want[ok]) + atol[ok]
    assert not bad.any(), f"{what}: {got[ok][bad][:5]} != {want[ok][bad][:5]}"


# -- random groups -----------------------------------------------------------------------------

# NOTE: ops that amplify an input's rounding (exp of a big sum...) or jump (sign, a
# comparison) read only the group's inputs, which both paths see exactly; the rest read
# anything. Domain errors (log1p(-2)) are NaN in both paths alike.
AT_INPUTS = ["exp", "expm1", "cube", "square", "log1p", "log", "sqrt", "sign", "div", "pow"]
ANYWHERE = ["neg", "abs", "tanh", "sigmoid", "softplus", "relu", "sin", "cos", "add", "sub", "mul",
            "maximum", "minimum", "leaky_relu", "unary_grad"]
COMPARE = ["lt", "le", "gt", "ge", "eq", "ne"]
GRAD_OPS = ["tanh", "sigmoid", "exp", "expm1", "log1p", "cube", "square", "relu", "softplus"]
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2, "maximum": 2, "minimum": 2, "unary_grad": 3}
SHAPES = [(7,), (3, 5), (2, 3, 4), (1, 6), (5, 1), (33,)]


def _kinds_for(shape):
    kinds = ["full", "scalar"]
    if shape:
        kinds.append("row")
    if len(shape) >= 2:
        kinds.append("col")
    return kinds


@st.composite
def random_group(draw):
    shape = draw(st.sampled_from(SHAPES))
    kinds = ["full"] + draw(st.lists(st.sampled_from(_kinds_for(shape)), max_size=3))
    inputs = [(k, False) for k in kinds]
    with_bool = draw(st.booleans())
    if with_bool:
        inputs.append(("full", True))
    floats_in = [i for i, (_, b) in enumerate(inputs) if not b]
    float_vals, bool_vals, members = [], [], []

    def operand(anywhere):
        choices = [("in", i) for i in floats_in] + ([("v", j) for j in float_vals] if anywhere else [])
        if draw(st.integers(0, 5)) == 0:
            return ("lit", draw(st.sampled_from([0.5, -2.0, 1.0, 0.0, 3.25])))
        return draw(st.sampled_from(choices))

    for _ in range(draw(st.integers(1, 7))):
        pick = draw(st.sampled_from(["at_inputs", "anywhere", "anywhere", "compare", "where"]))
        if pick == "compare" or (pick == "where" and not (bool_vals or with_bool)):
            op = draw(st.sampled_from(COMPARE))
            members.append((op, (), (operand(False), operand(False))))
            bool_vals.append(len(members) - 1)
            continue
        if pick == "where":
            conds = [("v", j) for j in bool_vals] + ([("in", len(inputs) - 1)] if with_bool else [])
            members.append(("where", (), (draw(st.sampled_from(conds)), operand(True), operand(True))))
        else:
            op = draw(st.sampled_from(AT_INPUTS if pick == "at_inputs" else ANYWHERE))
            params = ()
            if op == "leaky_relu":
                params = (("alpha", draw(st.sampled_from([0.01, 0.2]))),)
            if op == "unary_grad":
                params = (("op", draw(st.sampled_from(GRAD_OPS))),)
            refs = tuple(operand(pick == "anywhere") for _ in range(ARITY.get(op, 1)))
            if all(r[0] == "lit" for r in refs):
                refs = (("in", 0),) + refs[1:]
            members.append((op, params, refs))
        float_vals.append(len(members) - 1)
    if not float_vals:
        members.append(("tanh", (), (("in", 0),)))
        float_vals.append(len(members) - 1)
    outs = sorted(set(draw(st.lists(st.sampled_from(float_vals), min_size=0, max_size=3))) | {float_vals[-1]})
    layout = draw(st.sampled_from(["stack", "concat"])) if len(outs) > 1 and shape else "stack"
    return FusedGroup(shape=shape, inputs=tuple(inputs), members=tuple(members), outputs=tuple(outs),
                      layout=layout)


def make_inputs(group, dtype, rng, special=False, strided=False):
    """Arrays for the group's inputs; strided: full inputs as column slices of wider arrays."""
    shape = group.shape
    out = []
    for kind, is_bool in group.inputs:
        s = {"full": shape, "scalar": (), "row": shape[-1:], "col": tuple(shape[:-1]) + (1,)}[kind]
        if is_bool:
            out.append(rng.random(s) > 0.5)
            continue
        a = np.array(rng.uniform(-3, 3, s))
        if special:
            flat = a.reshape(-1)
            pick = rng.random(flat.size) < 0.4
            flat[pick] = rng.choice(SPECIAL, int(pick.sum()))
        a = a.astype(dtype)
        if strided and kind == "full" and len(shape) >= 1:
            # NaN around the slice: a read outside it shows in the result
            wide = np.full(tuple(shape[:-1]) + (3 * shape[-1] + 1,), np.nan, dtype)
            wide[..., 1:1 + shape[-1]] = a
            a = wide[..., 1:1 + shape[-1]]
        out.append(a)
    return out


GUARD = 64


def run_kernel(group, arrays, dtype, threads=1, inplace=False):
    """The group's kernel over arrays; its output lies between guards of a sentinel value,
    checked after the call (nothing written outside it)."""
    k = group.kernel(dtype)
    if inplace:
        out = arrays[0] = np.array(arrays[0], copy=True)
        generated.bind(k, arrays, out, group.shape, group.layout, threads)()
        return out
    size = int(np.prod(group.out_shape, dtype=np.int64))
    buf = np.full(size + 2 * GUARD, -7.0, dtype)
    out = buf[GUARD:GUARD + size].reshape(group.out_shape)
    generated.bind(k, arrays, out, group.shape, group.layout, threads)()
    assert (buf[:GUARD] == -7.0).all() and (buf[GUARD + size:] == -7.0).all(), \
        f"the kernel wrote outside its output: {group}"
    return out


def test_a_group_hashes_by_what_it_computes():
    """Its hash is worked out once and kept: equal groups (the sites aside) hash alike,
    and a group differing in any computed field is another key."""
    from dataclasses import replace
    from exprvm.compiler.lowering.fused import EXAMPLE
    same = replace(EXAMPLE, sites=("elsewhere.py:1",))
    assert hash(EXAMPLE) == hash(EXAMPLE) == hash(same) and {EXAMPLE: 1}[same] == 1
    others = [replace(EXAMPLE, layout="concat"), replace(EXAMPLE, outputs=(3,)),
              replace(EXAMPLE, shape=(6, 2)), replace(EXAMPLE, members=EXAMPLE.members[:3])]
    table = {EXAMPLE: 0}
    for k, g in enumerate(others, 1):
        assert g != EXAMPLE and g not in table
        table[g] = k
    assert [table[replace(g)] for g in others] == [1, 2, 3, 4]


# NOTE: every example compiles its kernels (one C build for all six); no shrinking, which
# would compile hundreds more: a failure prints the groups and the seed as drawn.
@settings(max_examples=examples(10), deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(st.lists(random_group(), min_size=6, max_size=6), st.sampled_from([F32, F64]),
       st.integers(0, 2**31 - 1))
def test_random_groups_match_the_per_op_numpy_path(groups, dtype, seed):
    generated.prepare([g.kernel(dtype) for g in groups])     # one build for all six
    rng = np.random.default_rng(seed)
    for n, group in enumerate(groups):
        for special, strided in ((False, False), (True, False), (True, True)):
            arrays = make_inputs(group, dtype, rng, special, strided)
            want, scale = per_op(group, arrays, dtype)
            got = stored(group, run_kernel(group, list(arrays), dtype))
            for q, (a, b) in enumerate(zip(got, want)):
                assert_close(a, b, scale, dtype, f"group {n} output {q} special={special} "
                                                 f"strided={strided}: {group}")
        one_full = len(group.outputs) == 1 and group.inputs[0] == ("full", False)
        if one_full:        # in place: the output is the first input's own buffer
            arrays = make_inputs(group, dtype, rng, special=True)
            want, scale = per_op(group, arrays, dtype)
            got = run_kernel(group, arrays, dtype, inplace=True)
            assert_close(got, want[0], scale, dtype, f"group {n} in place: {group}")


def test_ev_math_ops_stay_within_the_kernels_ulp_bounds():
    """Each op with an ev_math.h formula, alone in a kernel, against numpy over every 9973rd
    float32 bit pattern (all binades, both signs, NaN, Inf) and a spread of float64 values:
    at most 4 ulp in float32 and 3 in float64, as the C kernels (tests/test_kernels_c.py)."""
    def ordered(v, dtype):
        i = v.view(np.int32 if dtype == F32 else np.int64).astype(np.int64)
        return np.where(i < 0, -(i & np.int64(0x7FFFFFFFFFFFFFFF if dtype == F64 else 0x7FFFFFFF)), i)
    rng = np.random.default_rng(0)
    inputs = {F32: np.arange(0, 1 << 32, 9973, dtype=np.uint64).astype(np.uint32).view(F32),
              F64: np.concatenate([rng.uniform(-30, 30, 50000), np.exp(rng.uniform(-700, 6, 50000)),
                                   -np.exp(rng.uniform(-700, 6, 50000)), SPECIAL]).astype(F64)}
    ops = ["exp", "expm1", "log1p", "tanh", "sigmoid", "softplus", "relu", "square", "cube"]
    groups = {op: FusedGroup(shape=(1,), inputs=(("full", False),), members=((op, (), (("in", 0),)),),
                             outputs=(0,)) for op in ops}
    for dtype, x in inputs.items():
        generated.prepare([g.kernel(dtype) for g in groups.values()])
        for op, g in groups.items():
            g = FusedGroup(shape=x.shape, inputs=g.inputs, members=g.members, outputs=g.outputs)
            got = run_kernel(g, [x], dtype)
            with np.errstate(all="ignore"):
                want = np.asarray(OPS[op].impl(x)).astype(dtype)
            nan = np.isnan(want)
            np.testing.assert_array_equal(np.isnan(got), nan, err_msg=op)
            ulps = np.abs(ordered(got[~nan], dtype) - ordered(want[~nan], dtype))
            assert ulps.max() <= (4 if dtype == F32 else 3), f"{op} {dtype.__name__}: {ulps.max()} ulp"


def test_every_scalar_formula_has_an_op_with_a_numpy_impl():
    assert set(SCALAR) <= set(OPS), sorted(set(SCALAR) - set(OPS))


def test_threads_split_rows_and_one_long_row_alike():
    """A kernel split over two threads gives what one thread gives: by rows (2-d) and by
    chunks of one long row."""
    g2 = FusedGroup(shape=(300, 257), inputs=(("full", False), ("row", False)),
                    members=(("add", (), (("in", 0), ("in", 1))), ("tanh", (), (("v", 0),))), outputs=(1,))
    g1 = FusedGroup(shape=(100_003,), inputs=(("full", False),),
                    members=(("sigmoid", (), (("in", 0),)), ("mul", (), (("v", 0), ("in", 0)))), outputs=(1, 0))
    rng = np.random.default_rng(1)
    for g in (g2, g1):
        arrays = make_inputs(g, F32, rng)
        np.testing.assert_array_equal(run_kernel(g, list(arrays), F32, threads=2),
                                      run_kernel(g, list(arrays), F32, threads=1))


def test_bind_refuses_what_the_kernel_cannot_read():
    g = FusedGroup(shape=(4, 5), inputs=(("full", False), ("row", False)),
                   members=(("add", (), (("in", 0), ("in", 1))), ("tanh", (), (("v", 0),))), outputs=(1, 0))
    k = g.kernel(F32)
    x, b = np.ones((4, 5), F32), np.ones(5, F32)
    out = np.empty(g.out_shape, F32)
    generated.bind(k, [x, b], out, g.shape)()
    np.testing.assert_allclose(out[0], np.tanh(2.0), rtol=1e-6)
    with pytest.raises(ev.DTypeError):
        generated.bind(k, [x.astype(F64), b], out, g.shape)
    with pytest.raises(KernelError):
        generated.bind(k, [np.ones((5, 4), F32).T, b], out, g.shape)    # transposed: gather first
    with pytest.raises(KernelError):
        generated.bind(k, [x.view(type("Sub", (np.ndarray,), {})), b], out, g.shape)   # a subclass
    with pytest.raises(ev.ShapeError):
        generated.bind(k, [x, np.ones(4, F32)], out, g.shape)
    with pytest.raises(ev.ShapeError):
        generated.bind(k, [x, b], np.empty((4, 5), F32), g.shape)       # two results need (2, 4, 5)
    with pytest.raises(KernelError):
        generated.bind(k, [out[0], b], out, g.shape)                    # partial overlap with out
    ro = np.empty(g.out_shape, F32)
    ro.setflags(write=False)
    with pytest.raises(KernelError):
        generated.bind(k, [x, b], ro, g.shape)


# -- the pass, through the TapeMachine ----------------------------------------------------------

def _run(g, cost, params, feeds, **kw):
    kw.setdefault("fuse", "sync")   # the fused program itself, not its first (unfused) tier
    m = ev.TapeMachine(g, [cost], **kw)
    m.run(feeds)
    return m, float(cost.value), [p.grad.copy() for p in params]


@pytest.mark.parametrize("name", ["lstm_b32", "rnn_b32", "rnn_b1", "mlp"])
def test_models_train_the_same_fused_and_unfused(name):
    w, data = models.weights_and_data(name, small=True)
    m = models.graph(name, w, small=True)
    feeds = m.feeds(data)
    fused, c1, g1 = _run(m.graph, m.cost, m.params, feeds, backend="c")
    _, c2, g2 = _run(m.graph, m.cost, m.params, feeds, backend="c", fuse=False)
    assert fused.program.verify()
    assert "fused" in [i.op for i in fused.program] or name == "mlp"
    assert c1 == pytest.approx(c2, rel=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_lstm_step_is_one_matmul_and_one_fused_kernel_each_way():
    """Each forward step: the recurrent matmul, then one kernel for all the gate arithmetic
    (reading the gates as slices of the step's inputs in place, the add included); each
    backward step: one kernel writing the four gates' gradients side by side, as the
    matmul after it reads them (no concatenation)."""
    w, data = models.weights_and_data("lstm_b32", small=True)
    m = models.graph("lstm_b32", w, small=True)
    prog = ev.TapeMachine(m.graph, [m.cost], backend="c", fuse="sync").program
    ops = [i.op for i in prog]
    steps = models.sizes("lstm_b32", small=True)["steps"]
    assert ops.count("fused") >= 2 * (steps - 1)
    # x_t + bias + h @ W per gate, then the gates: the per-step adds run inside the kernel
    forward = [i for i in prog if i.op == "fused" and "add add sigmoid add add sigmoid" in i.note]
    assert len(forward) >= steps - 2, str(prog)
    assert ops.count("add") <= 2, str(prog)        # the output layer's bias add, at most one more
    by_out = {i.out: i for i in prog}
    for ins in prog:        # no last-axis concatenation of one fused value's parts: laid out in place
        shapes = [prog.registers[r].shape for r in ins.ins]
        if ins.op == "concat" and all(s[:-1] == prog.registers[ins.out].shape[:-1] for s in shapes):
            roots = {prog.root(r).id for r in ins.ins}
            assert not (len(roots) == 1 and by_out.get(roots.pop(), ins).op == "fused"), ins.text()
    unfused = ev.TapeMachine(m.graph, [m.cost], backend="c", fuse=False).program
    assert ops.count("concat") < [i.op for i in unfused].count("concat")
    assert len(prog) < len(unfused) / 2


def test_a_chain_of_ops_read_through_slices_is_pushed_round_by_round():
    """z = exp(x) * y + h @ W read only through its gates: z pushed into the gates makes its
    operand exp(x) * y read through slices, which is pushed in the next round, and then
    exp(x): every op but the matmul runs per gate inside the one fused kernel."""
    H, B = 3, 2
    g = ev.Graph()
    x, y = g.matrix("x", (B, 4 * H)), g.matrix("y", (B, 4 * H))
    h = g.matrix("h", (B, H))
    W = g.matrix("W", (H, 4 * H), init=ev.init.glorot_normal())
    z = ev.exp(x) * y + h @ W
    i, f, o, c = (z[:, k * H:(k + 1) * H] for k in range(4))
    cost = ev.sum(ev.sigmoid(i) * ev.tanh(c) + ev.sigmoid(f) * ev.sigmoid(o))
    prog = ev.TapeMachine(g, [cost], backend="c", fuse="sync").program
    assert [ins.op for ins in prog] == ["matmul", "fused", "sum"], str(prog)
    wide = [ins for ins in prog if prog.registers[ins.out].shape == (B, 4 * H)]
    assert [ins.op for ins in wide] == ["matmul"], str(prog)
    rng = np.random.default_rng(0)
    feeds = {x: rng.normal(size=(B, 4 * H)), y: rng.normal(size=(B, 4 * H)), h: rng.normal(size=(B, H))}
    m = ev.TapeMachine(g, [cost], backend="c", fuse="sync")
    m.run(feeds)
    zz = np.exp(feeds[x]) * feeds[y] + feeds[h] @ W.value
    gate = [zz[:, k * H:(k + 1) * H] for k in range(4)]
    sig = lambda a: 1 / (1 + np.exp(-a))     # noqa: E731
    want = np.sum(sig(gate[0]) * np.tanh(gate[3]) + sig(gate[1]) * sig(gate[2]))
    assert float(cost.value) == pytest.approx(want, rel=1e-12)


def test_disassembly_names_fused_ops_and_lines():
    g = ev.Graph()
    x = g.matrix("x", (4, 3), dtype=F32)
    b = g.vector("b", 3, dtype=F32, value=np.ones(3, F32))
    y = ev.tanh(x * 2.0 + b)
    z = ev.sigmoid(y) * y
    cost = ev.sum(z)
    m = ev.TapeMachine(g, [cost, y], fuse="sync")
    text = str(m.program)
    line = next(ln for ln in text.splitlines() if " = fused[c] " in ln)
    assert "fused 5: mul add tanh sigmoid mul" in line
    assert "test_fusion.py:" in line
    assert "generated kernels" in text
    m.run({x: np.full((4, 3), 0.25, F32)})
    want_y = np.tanh(0.25 * 2 + 1)
    np.testing.assert_allclose(y.value, np.full((4, 3), want_y), rtol=1e-6)
    np.testing.assert_allclose(cost.value, 12 * want_y / (1 + np.exp(-want_y)), rtol=1e-5)


def test_trace_and_watches_see_every_value():
    g = ev.Graph()
    x = g.vector("x", 3, dtype=F32)
    a = x + 1.0
    y = ev.tanh(a) * 2.0
    cost = ev.sum(y)
    for kw in ({"trace": True}, {"nan_watch": True}, {"inf_watch": True}, {"fuse": False}):
        m = ev.TapeMachine(g, [cost], **kw)
        assert "fused" not in [i.op for i in m.program], kw
    m = ev.TapeMachine(g, [cost], trace=True)
    m.run({x: np.zeros(3, F32)})
    np.testing.assert_array_equal(a.value, np.ones(3, F32))
    w = ev.TapeMachine(g, [cost], watch=[a], fuse="sync")      # a watched value is a result of its group
    w.run({x: np.zeros(3, F32)})
    assert "fused" in [i.op for i in w.program]
    np.testing.assert_array_equal(w.history[a][-1], np.ones(3, F32))


def test_fused_output_reuses_a_dying_input_in_place():
    g = ev.Graph()
    W = g.matrix("W", (6, 5), dtype=F32, value=np.full((6, 5), 0.1, F32))
    v = g.matrix("v", (5, 4), dtype=F32)
    h = W @ v                                   # a buffer that dies at the fused instruction
    y = ev.tanh(h * 0.5) + h
    prog = ev.TapeMachine(g, [y], fuse="sync").program
    ins = next(i for i in prog if i.op == "fused")
    src = prog.registers[ins.ins[0]]
    assert prog.memory(prog.registers[ins.out]) == prog.memory(src), str(prog)
    assert prog.verify()
    m = ev.TapeMachine(g, [y], fuse="sync")
    vv = np.random.default_rng(0).standard_normal((5, 4)).astype(F32)
    m.run({v: vv})
    hv = W.value @ vv
    np.testing.assert_allclose(y.value, np.tanh(hv * 0.5) + hv, rtol=1e-6, atol=1e-7)


def test_transposed_operands_are_gathered_and_values_agree():
    g = ev.Graph()
    a = g.matrix("a", (5, 4), dtype=F64)
    b = g.matrix("b", (4, 5), dtype=F64)
    y = ev.sigmoid(ev.transpose(a) * b) - b
    m = ev.TapeMachine(g, [y], fuse="sync")
    assert "fused" in [i.op for i in m.program]
    r = np.random.default_rng(2)
    av, bv = r.standard_normal((5, 4)), r.standard_normal((4, 5))
    m.run({a: av, b: bv})
    np.testing.assert_allclose(y.value, 1 / (1 + np.exp(-av.T * bv)) - bv, rtol=1e-12)


# -- random graphs: groups stay convex around the ops that cut them ------------------------------

@st.composite
def random_graph(draw):
    """A recipe: per step, an op and operand picks over the values made so far."""
    steps = draw(st.lists(st.tuples(st.sampled_from(["tanh", "mul", "add", "sigmoid", "sub", "relu",
                                                     "sum_keep", "matmul", "exp_t", "where"]),
                                    st.integers(0, 99), st.integers(0, 99)), min_size=3, max_size=14))
    return steps


def build_random(g, steps, dtype):
    n = 4
    x = g.matrix("x", (n, n), dtype=dtype)
    W = g.matrix("W", (n, n), dtype=dtype, value=np.eye(n, dtype=dtype) * 0.5 + 0.1)
    vals = [x, W]
    for op, i, j in steps:
        a, b = vals[i % len(vals)], vals[j % len(vals)]
        if op == "tanh":
            vals.append(ev.tanh(a))
        elif op == "sigmoid":
            vals.append(ev.sigmoid(a))
        elif op == "relu":
            vals.append(ev.relu(a))
        elif op == "exp_t":
            vals.append(ev.exp(ev.tanh(a)))
        elif op in ("mul", "add", "sub"):
            vals.append({"mul": a * b, "add": a + b, "sub": a - b}[op])
        elif op == "sum_keep":       # a reduction broadcast back: a cut inside elementwise chains
            vals.append(a - ev.sum(a, axis=1, keepdims=True) * 0.25)
        elif op == "matmul":
            vals.append(ev.tanh(a @ b))
        else:
            vals.append(ev.where(a > b, a, b * 0.5))
    return x, W, vals


@settings(max_examples=examples(10), deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(random_graph(), st.sampled_from([F32, F64]))
def test_random_graphs_fused_match_the_lisp_machine(steps, dtype):
    g = ev.Graph()
    x, W, vals = build_random(g, steps, dtype)
    cost = ev.sum(ev.tanh(vals[-1])) + ev.sum(vals[len(vals) // 2] * 0.5) + ev.sum(ev.sigmoid(x @ W) * x)
    gW, = ev.grad(cost, [W])
    m = ev.TapeMachine(g, [cost, vals[-1]], fuse="sync")
    assert m.program.verify()
    xv = np.random.default_rng(len(steps)).uniform(-1, 1, (4, 4)).astype(dtype)
    m.run({x: xv})
    got = (float(cost.value), vals[-1].value.copy(), W.grad.copy())
    lm = ev.LispMachine(g, cost=cost, outputs=[vals[-1]], replay=False)
    lm.run({x: xv})
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == F32 else dict(rtol=1e-9, atol=1e-11)
    assert got[0] == pytest.approx(float(cost.value), **{"rel": tol["rtol"], "abs": tol["atol"] * 16})
    np.testing.assert_allclose(got[1], vals[-1].value, **tol)
    np.testing.assert_allclose(got[2], W.grad, **tol)


def test_convexity_a_group_never_waits_on_its_own_result():
    """a -> (sum, outside any group) -> b, with a and b elementwise over one shape: they
    cannot share an instruction; both still fuse with their own neighbours."""
    g = ev.Graph()
    x = g.matrix("x", (3, 4), dtype=F32)
    a = ev.tanh(x) * 2.0
    s = ev.sum(a, axis=1, keepdims=True)
    b = ev.sigmoid(a + s) * a
    m = ev.TapeMachine(g, [b], fuse="sync")
    prog = m.program
    fused = [i for i in prog if i.op == "fused"]
    assert len(fused) == 2 and prog.verify()
    xv = np.linspace(-1, 1, 12, dtype=F32).reshape(3, 4)
    m.run({x: xv})
    av = np.tanh(xv) * 2
    np.testing.assert_allclose(b.value, 1 / (1 + np.exp(-(av + av.sum(1, keepdims=True)))) * av, rtol=1e-5)


# -- the disk cache and the fallback ----------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {bench!r})
    import exprvm as ev, models
    from exprvm.kernels import generated
    w, data = models.weights_and_data("lstm_b32", small=True)
    m = models.graph("lstm_b32", w, small=True)
    tm = ev.TapeMachine(m.graph, [m.cost], fuse="sync")
    tm.run(m.feeds(data))
    print(generated.available()[0], generated.STATS["compiled"], [i.op for i in tm.program].count("fused"),
          repr(float(m.cost.value)))
""")


def _child(env_extra, script=SCRIPT):
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", script.format(bench=str(ROOT / "benchmarks"))],
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_second_process_compiles_nothing(tmp_path):
    env = {"EXPRVM_CACHE_DIR": str(tmp_path)}
    first = _child(env)
    second = _child(env)
    assert first[0] == "True" and int(first[1]) >= 1 and int(first[2]) > 0
    assert second[1] == "0" and second[2] == first[2] and second[3] == first[3]
    assert any(p.suffix == ".lib" for p in (tmp_path / "fused").iterdir())


def test_concurrent_builds_of_one_kernel_are_safe(tmp_path):
    env = dict(os.environ, EXPRVM_CACHE_DIR=str(tmp_path))
    script = SCRIPT.format(bench=str(ROOT / "benchmarks"))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=str(ROOT)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len({o[0].split()[3] for o in outs}) == 1
    assert not [p for p in (tmp_path / "fused").iterdir() if p.name.startswith(".tmp-")]


def test_without_a_compiler_everything_runs_per_op(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(sys.executable, bare / "python")
    env = {"EXPRVM_CACHE_DIR": str(tmp_path / "cache"), "PATH": str(bare), "CC": ""}
    no_cc = _child(env)
    assert no_cc[0] == "False" and no_cc[1] == "0" and no_cc[2] == "0"
    off = _child({"EXPRVM_CACHE_DIR": str(tmp_path / "cache"), "EXPRVM_FUSE": "0"})
    assert off[0] == "False" and off[2] == "0"
    on = _child({"EXPRVM_CACHE_DIR": str(tmp_path / "cache")})
    assert float(on[3]) == pytest.approx(float(no_cc[3]), rel=1e-5)
    assert float(off[3]) == float(no_cc[3])


def test_fusion_reports_its_availability():
    ok, why = fusion.available()
    assert ok and str(generated.cache_root()) in why


# -- the benchmark models the targets are measured on ----------------------------------------

def test_gru_benchmark_fuses_and_matches_its_handwritten_numpy():
    import copy
    import gru
    w, data = gru.weights_and_data(small=True)
    w = {k: v.astype(F64) + np.random.default_rng(3).standard_normal(v.shape) * 0.1 for k, v in w.items()}
    m = gru.graph(w, small=True)
    tm = ev.TapeMachine(m.graph, [m.cost], fuse="sync")
    assert [i.op for i in tm.program].count("fused") >= 2 * models.sizes("lstm_b32", True)["steps"] - 2
    tm.run(m.feeds(data))
    by_hand = copy.deepcopy(w)
    loss = gru.step(by_hand, data["ids"], data["targets"], lr=1.0)
    assert float(m.cost.value) == pytest.approx(loss, rel=1e-12)
    for p in m.params:
        np.testing.assert_allclose(p.grad, w[p.name] - by_hand[p.name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["rnn_b32", "lstm_b32", "gru_b32"])
def test_torch_recurrent_layers_train_the_same_model(name):
    """peers.torch_nn_step (torch.nn.RNN / LSTM / GRU) computes the loss of the same
    weights as the handwritten numpy step."""
    require(importlib.util.find_spec("torch") is not None, "PyTorch is not installed")
    import copy
    import gru
    import handwritten as hw
    import peers
    w, data = gru.weights_and_data(True) if name == "gru_b32" else models.weights_and_data(name, True)
    step = peers.torch_nn_step(name, copy.deepcopy(w), data)
    fn = {"rnn_b32": hw.rnn_step, "lstm_b32": hw.lstm_step, "gru_b32": gru.step}[name]
    assert step.loss() == pytest.approx(float(fn(copy.deepcopy(w), data["ids"], data["targets"], 0.0)), rel=1e-5)
