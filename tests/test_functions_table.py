"""The composite functions' table (exprvm.ops.FUNCTIONS): numpy functions written as
compositions of ops, each with a row like an op's.

For each: the eager call on arrays and both machines agree with the row's reference
(numpy's own function or a formula apart from the composition), in float32 and
float64; the gradients agree with finite differences and across machines; and for
the new elementwise and cumulative ops and these functions, second derivatives agree
with finite differences of the first.
"""
import numpy as np
import pytest

import exprvm as ev
from exprvm.core import OPS
from exprvm.ops import FUNCTIONS
from machines import EVALUATORS
from test_ops_table import REF_TOL, TOL, make_arg

NAMES = sorted(FUNCTIONS)


def sample(name, dtype, seed=0):
    row = FUNCTIONS[name].row
    rng = np.random.default_rng(seed)
    return [make_arg(s, dtype, rng) for s in row.args], dict(row.params)


def build(name, arrays, params):
    g = ev.Graph(name)
    leaves = [g.tensor(f"a{i}", a.shape, a.dtype, value=a) for i, a in enumerate(arrays)]
    return g, leaves, FUNCTIONS[name].call(*leaves, **params)


def test_every_function_has_a_reference():
    missing = [n for n in NAMES if FUNCTIONS[n].row.ref is None]
    assert not missing, f"composites without a reference: {missing}"


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_forward(name, dtype, machine):
    arrays, params = sample(name, dtype)
    row = FUNCTIONS[name].row
    want = np.asarray(row.ref(*arrays, **params))
    eager = np.asarray(FUNCTIONS[name].call(*arrays, **params))
    np.testing.assert_allclose(eager, want, **REF_TOL[dtype], err_msg=f"{name}: eager vs reference")
    g, _, node = build(name, arrays, params)
    assert isinstance(node, ev.Node) and node.shape == want.shape, f"{name}: {node.shape} vs {want.shape}"
    assert node.dtype == eager.dtype == dtype
    (got,) = EVALUATORS[machine](g, [node])
    np.testing.assert_allclose(got, want, **REF_TOL[dtype], err_msg=f"{name} on {machine}")


def _cost_fn(call, arrays, params, seed=1):
    out_shape = np.shape(call(*arrays, **params))
    w = np.random.default_rng(seed).uniform(0.5, 1.5, out_shape)
    return lambda *nodes: ev.sum(ev.astype(call(*nodes, **params), np.float64) * w)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_finite_differences(name):
    arrays, params = sample(name, np.float64)
    assert ev.check_grad(_cost_fn(FUNCTIONS[name].call, arrays, params), arrays)


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_machines_agree(name, dtype, machine):
    arrays, params = sample(name, dtype)
    fn = _cost_fn(FUNCTIONS[name].call, arrays, params)
    g = ev.Graph()
    nodes = [g.tensor(f"x{i}", a.shape, a.dtype, value=a) for i, a in enumerate(arrays)]
    cost = fn(*nodes)
    grads = ev.grad(cost, nodes)
    got = EVALUATORS[machine](g, grads)
    ev.LispMachine(g, cost=cost, replay=False).run()
    for n, gv in zip(nodes, got):
        assert gv.dtype == n.dtype
        np.testing.assert_allclose(np.broadcast_to(gv, n.shape), n.grad, **TOL[dtype])

# -- second derivatives ------------------------------------------------------------------------


NEW_OPS = ["sinh", "cosh", "tan", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh",
           "arctan2", "hypot", "log10", "exp2", "logaddexp", "logaddexp2", "reciprocal", "sinc",
           "remainder", "fmod", "fmax", "fmin", "nan_to_num", "cumsum", "cumprod", "prod", "pnorm",
           "take_along_axis", "take_along_axis_grad", "pow"]


def _second_order(call, arrays, params):
    """fn(*nodes): a weighted sum of the gradient of a weighted sum of call's output,
    whose gradient is the second derivative along those weights."""
    first = _cost_fn(call, arrays, params)
    rng = np.random.default_rng(3)
    ws = [rng.uniform(0.5, 1.5, a.shape) for a in arrays]

    def fn(*nodes):
        grads = ev.grad(first(*nodes), list(nodes))
        return ev.sum(ev.stack([ev.sum(gr * w) for gr, w in zip(grads, ws)]))
    return fn


@pytest.mark.parametrize("name", NEW_OPS)
def test_second_derivatives_of_the_new_ops(name):
    from test_ops_table import sample as op_sample
    arrays, params = op_sample(name, np.float64)
    floats = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]

    def call(*xs, **p):
        args = list(arrays)
        for i, x in zip(floats, xs):
            args[i] = x
        return ev.apply(name, *args, **p)
    assert ev.check_grad(_second_order(call, [arrays[i] for i in floats], params),
                         [arrays[i] for i in floats], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_second_derivatives_of_the_functions(name):
    arrays, params = sample(name, np.float64)
    assert ev.check_grad(_second_order(FUNCTIONS[name].call, arrays, params), arrays, rtol=1e-4, atol=1e-6)


def test_ops_and_functions_do_not_share_names():
    assert not set(FUNCTIONS) & set(OPS)
