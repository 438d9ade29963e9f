"""The op table: every registered op, generated from the registry.

For each op: the shape/dtype rule agrees with the numpy reference, every machine
agrees with the reference (float32 and float64), the reference agrees with an
independent naive formula where the row gives one, and every differentiable op's
gradients agree with finite differences and across machines.
"""
import dis
import types

import numpy as np
import pytest

import exprvm as ev
from exprvm.core import OPS
from exprvm.kernels import reference
from exprvm.ops.control.common import TESTED_ELSEWHERE
from machines import EVALUATORS

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
# A reference takes another route to the result (its own rounding): float32 rounding apart.
REF_TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def make_arg(spec, dtype, rng):
    kind = spec[0]
    if kind == "f":
        _, shape, lo, hi = spec
        return rng.uniform(lo, hi, shape).astype(dtype)
    if kind == "i":
        _, shape, hi = spec
        return rng.integers(0, hi, shape)
    if kind == "b":
        return rng.random(spec[1]) > 0.5
    raise AssertionError(f"unknown arg spec {spec}")


def sample(name, dtype, seed=0):
    row = OPS[name].row
    rng = np.random.default_rng(seed)
    arrays = [make_arg(s, dtype, rng) for s in row.args]
    params = dict(row.params)
    if row.random:
        params["rng"] = np.random.default_rng(seed)
    return arrays, params


def build(name, arrays, params):
    g = ev.Graph(name)
    leaves = [g.tensor(f"a{i}", a.shape, a.dtype, value=a) for i, a in enumerate(arrays)]
    return g, leaves, ev.apply(name, *leaves, **params)


# Loops and branches hold traced bodies in their params and have tuple values: their own
# tests (test_control_flow.py) check them against numpy loops on both machines.
ELSEWHERE = set(TESTED_ELSEWHERE)
ALL = sorted(n for n in OPS if n not in ELSEWHERE)
DIFF = sorted(n for n, op in OPS.items() if op.row is not None and op.row.grad)


def test_every_op_has_a_row():
    missing = sorted(n for n, op in OPS.items() if op.row is None and n not in ELSEWHERE)
    assert not missing, f"ops without a test-table row: {missing}"


# -- a reference must not be its impl again ------------------------------------------------

_OPERATORS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power,
              "//": np.floor_divide, "%": np.remainder}
_UNARY = {"UNARY_NEGATIVE": np.negative, "UNARY_POSITIVE": np.positive, "UNARY_INVERT": np.invert}


def _codes(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def _operator_of(code):
    """The ufunc a function body of one operator on its arguments computes, or None."""
    ins = [i for i in dis.get_instructions(code) if i.opname not in ("RESUME", "NOP", "CACHE")]
    names = [i.opname for i in ins]
    if names == ["LOAD_FAST", "LOAD_FAST", "BINARY_OP", "RETURN_VALUE"]:
        return _OPERATORS.get(ins[2].argrepr)
    if names == ["LOAD_FAST", "UNARY_NEGATIVE", "RETURN_VALUE"] or (len(names) == 3 and names[1] in _UNARY):
        return _UNARY.get(names[1])
    return None


def same_route(ref, impl):
    """Why ref computes what impl computes by the same code, or None."""
    if ref is impl:
        return "it is the impl"
    fns = [ref] + [c.cell_contents for c in (getattr(ref, "__closure__", None) or ())
                   if callable(getattr(c, "cell_contents", None))]
    ic = getattr(impl, "__code__", None)
    for fn in fns:
        if fn is impl:
            return "it wraps the impl"
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        if ic is not None and (code.co_code, code.co_consts, code.co_names) == (ic.co_code, ic.co_consts, ic.co_names):
            return "its code is the impl's"
        if fn is ref and isinstance(impl, np.ufunc) and _operator_of(code) is impl:
            return f"it is the impl's operator ({impl.__name__})"
        glob = getattr(fn, "__globals__", {})
        for c in _codes(code):
            for name in c.co_names:
                obj = glob.get(name)
                if obj is impl:
                    return f"it calls the impl ({name})"
                if obj is reference or getattr(obj, "__module__", None) == reference.__name__:
                    return f"it computes with exprvm.kernels.reference ({name})"
    return None


def test_every_op_has_an_independent_reference():
    # Row.ref: the op's formula written apart from its impl (a random op's ref checks the
    # distribution of a sample instead).
    missing = sorted(n for n, op in OPS.items() if op.row is not None and op.row.ref is None)
    assert not missing, f"ops whose test-table row has no independent ref=: {missing}"
    same = {n: same_route(op.row.ref, op.impl) for n, op in OPS.items() if op.row is not None}
    same = {n: why for n, why in same.items() if why}
    assert not same, f"ops whose ref= computes by the impl's own code: {same}"


def test_the_reference_check_refuses_the_impl_in_disguise():
    def impl(x, y):
        return x * 2 + y

    def twin(x, y):
        return x * 2 + y
    assert same_route(impl, impl) and same_route(twin, impl)
    assert same_route(lambda x, y: impl(x, y) + 0, impl)                        # calls it
    assert same_route(lambda x, y: x + y, np.add) and same_route(lambda x: -x, np.negative)
    assert same_route(lambda x, ans, g: reference.GRAD["tanh"](x, ans, g, None), impl)
    assert same_route(lambda x, y: x * 2.0 + y * 1.0, impl) is None              # another route


def _refuses_gradient(name):
    """Does the op's VJP refuse with a GradError (a derivative exprvm does not offer)?"""
    arrays, params = sample(name, np.float64)
    g, leaves, node = build(name, arrays, params)
    try:
        ev.grad(ev.sum(node), [n for n in leaves if n.dtype.kind == "f"])
    except ev.GradError:
        return True
    return False


def test_differentiable_rows_match_vjps():
    # A row may only skip the gradient check for an op that has no VJP, or whose VJP
    # refuses with a GradError (a second derivative not offered, say).
    skipped = sorted(n for n, op in OPS.items() if n not in ELSEWHERE and op.row is not None
                     and not op.row.grad and op.differentiable and not _refuses_gradient(n))
    assert not skipped, f"differentiable ops whose rows skip the gradient check: {skipped}"


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ALL)
def test_forward(name, dtype, machine):
    arrays, params = sample(name, dtype)
    row = OPS[name].row
    g, _, node = build(name, arrays, params)
    if row.random:
        (got,) = EVALUATORS[machine](g, [node])
        assert got.shape == node.shape and got.dtype == node.dtype
        if row.ref is not None:     # a random row's ref checks the sample's distribution
            assert row.ref(got, *arrays, **params), f"{name}: the sample fails its distribution check"
            return
        rate = params["rate"]
        assert set(np.unique(got)) <= {0.0, np.float32(1 / (1 - rate))}
        assert abs((got == 0).mean() - rate) < 0.1
        return
    # NOTE: the machines are checked against the row's independent formula, never against
    # OPS[name].impl: the LispMachine's walk calls that impl, so it would check itself.
    impl = np.asarray(OPS[name].impl(*arrays, **params))
    assert node.shape == impl.shape, f"{name}: rule says {node.shape}, numpy gives {impl.shape}"
    assert node.dtype == impl.dtype, f"{name}: rule says {node.dtype}, numpy gives {impl.dtype}"
    want = np.asarray(row.ref(*arrays, **params))
    assert want.shape == node.shape, f"{name}: the reference gives {want.shape}, the rule {node.shape}"
    np.testing.assert_allclose(impl, want, **REF_TOL[dtype], err_msg=f"{name}: impl vs reference")
    (got,) = EVALUATORS[machine](g, [node])
    assert got.shape == node.shape and got.dtype == node.dtype
    np.testing.assert_allclose(got, want, **REF_TOL[dtype], err_msg=f"{name} on {machine} vs reference")


def _cost_fn(name, arrays, params, seed=1):
    """fn(*float_nodes) -> scalar: a random weighting of the op's output."""
    float_pos = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    out_shape = np.asarray(OPS[name].impl(*arrays, **params)).shape
    w = np.random.default_rng(seed).uniform(0.5, 1.5, out_shape)

    def fn(*nodes):
        args = list(arrays)
        for i, n in zip(float_pos, nodes):
            args[i] = n
        out = ev.apply(name, *args, **params)
        return ev.sum(ev.astype(out, np.float64) * w)

    return fn, [arrays[i] for i in float_pos]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", DIFF)
def test_gradient_finite_differences(name, seed):
    """Every differentiable row at two points (a rule right at one sample only is caught)."""
    arrays, params = sample(name, np.float64, seed)
    fn, float_args = _cost_fn(name, arrays, params, seed=seed + 1)
    assert ev.check_grad(fn, float_args)


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", DIFF)
def test_gradient_machines_agree(name, dtype, machine):
    """Symbolic gradients run on each machine == the LispMachine's run-time autodiff."""
    arrays, params = sample(name, dtype)
    fn, float_args = _cost_fn(name, arrays, params)
    g = ev.Graph()
    nodes = [g.tensor(f"x{i}", a.shape, a.dtype, value=a) for i, a in enumerate(float_args)]
    cost = fn(*nodes)
    grads = ev.grad(cost, nodes)
    got = EVALUATORS[machine](g, grads)
    ev.LispMachine(g, cost=cost, replay=False).run()   # the walk's own autodiff
    for n, gv in zip(nodes, got):
        assert gv.dtype == n.dtype
        np.testing.assert_allclose(np.broadcast_to(gv, n.shape), n.grad, **TOL[dtype])


# NOTE: a row makes one sample per op; matmul's shape cases each take another path (the
# inner dimension of 1 is an outer product, 1-d operands are promoted, batches broadcast).
MATMUL_SHAPES = [((3, 1), (1, 4)), ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)),
                 ((2, 1, 3), (3, 2)), ((4, 2, 3), (4, 3, 5)), ((3, 4), (4, 5)), ((1, 3), (3, 1))]


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_shapes_against_the_reference(sa, sb, dtype, machine):
    from exprvm.ops import refs
    rng = np.random.default_rng(5)
    a, b = rng.uniform(-1, 1, sa).astype(dtype), rng.uniform(-1, 1, sb).astype(dtype)
    want = refs.matmul(a, b)
    np.testing.assert_allclose(ev.matmul(a, b), want, **REF_TOL[dtype])   # the eager impl
    g, _, node = build("matmul", [a, b], {})
    assert node.shape == want.shape
    (got,) = EVALUATORS[machine](g, [node])
    np.testing.assert_allclose(got, want, **REF_TOL[dtype])
    if dtype == np.float64:
        assert ev.check_grad(lambda x, y: ev.sum(ev.matmul(x, y) * np.cos(np.arange(want.size))
                                                 .reshape(want.shape)), [a, b])
