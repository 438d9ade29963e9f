"""The ops beyond the core set: rounding, stop_gradient, clip, pad, split, var/std/norm,
argmax/argmin, tensordot/einsum, elu/gelu/erf/log2. The op table checks one row of each
against numpy on both machines and by finite differences; these tests check the other
forms (modes, axes, ords, subscripts), the gradients those forms take, and the errors."""
import importlib.util
import math

import numpy as np
import pytest

import exprvm as ev
from exprvm.core import OPS
from machines import EVALUATORS
from requires import require

MACHINES = sorted(EVALUATORS)


def run_both(fn, *arrays):
    """fn(*nodes) -> node, on every machine; returns the values (all machines agree)."""
    out = []
    for name in MACHINES:
        g = ev.Graph()
        nodes = [g.tensor(f"a{i}", a.shape, a.dtype, value=a) for i, a in enumerate(arrays)]
        (v,) = EVALUATORS[name](g, [fn(*nodes)])
        out.append(v)
    for v in out[1:]:
        np.testing.assert_allclose(v, out[0], rtol=1e-12, atol=1e-13)
    return out[0]


def weighted(fn, seed=3):
    """fn(*nodes) -> a scalar: a fixed random weighting of fn's output, for check_grad."""
    def cost(*nodes):
        y = fn(*nodes)
        w = np.random.default_rng(seed).uniform(0.5, 1.5, y.shape)
        return ev.sum(y * w)
    return cost


# -- rounding ------------------------------------------------------------------------------

def test_rounding_matches_numpy_and_rounds_half_to_even():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -1.2, 1.7, 3.0])
    np.testing.assert_array_equal(run_both(ev.floor, x), np.floor(x))
    np.testing.assert_array_equal(run_both(ev.ceil, x), np.ceil(x))
    np.testing.assert_array_equal(run_both(ev.round, x), [-2, -2, -0, 0, 2, 2, -1, 2, 3])
    np.testing.assert_allclose(run_both(lambda a: ev.round(a, 1), np.array([1.26, -3.14])), [1.3, -3.1])


@pytest.mark.parametrize("op", ["floor", "ceil", "round"])
def test_a_parameter_reached_only_through_rounding_has_a_zero_gradient(op):
    for machine in ("lisp", "tape"):
        g = ev.Graph()
        w = g.vector("w", 4, value=np.array([0.3, 1.6, -2.2, 5.5]))
        cost = ev.sum(getattr(ev, op)(w * 3.0) * w)   # the product rule's other half survives
        gw = ev.grad(cost, w)
        if machine == "lisp":
            ev.LispMachine(g, cost=cost, replay=False).run()
            got = w.grad
        else:
            ev.TapeMachine(g, outputs=[cost]).run()
            got = gw.value
        np.testing.assert_allclose(got, getattr(np, op)(w.value * 3.0))


# -- stop_gradient / clip ---------------------------------------------------------------------

def test_stop_gradient_blocks_only_its_own_path():
    x0 = np.array([1.0, -2.0, 3.0])
    g = ev.Graph()
    x = g.vector("x", 3, value=x0)
    cost = ev.sum(x * ev.stop_gradient(x))          # d/dx = stop(x), not 2x
    gx = ev.grad(cost, x)
    ev.TapeMachine(g, outputs=[cost]).run()
    np.testing.assert_allclose(gx.value, x0)
    ev.LispMachine(g, cost=cost, replay=False).run()
    np.testing.assert_allclose(x.grad, x0)
    only = ev.grad(ev.sum(ev.stop_gradient(x) * 2.0), x)
    ev.LispMachine(g, outputs=[only]).run()
    np.testing.assert_array_equal(only.value, 0)
    assert not OPS["stop_gradient"].differentiable


def test_clip_forms_and_gradients():
    x = np.array([-3.0, -1.0, 0.2, 0.5, 2.0])
    np.testing.assert_allclose(run_both(lambda a: ev.clip(a, -1.0, 0.5), x), np.clip(x, -1, 0.5))
    np.testing.assert_allclose(run_both(lambda a: ev.clip(a, None, 0.5), x), np.minimum(x, 0.5))
    np.testing.assert_allclose(run_both(lambda a: ev.clip(a, 0.0), x), np.maximum(x, 0))
    lo = np.full(5, -0.5)
    np.testing.assert_allclose(run_both(lambda a, b: ev.clip(a, b, 1.0), x, lo), np.clip(x, -0.5, 1.0))
    g = ev.Graph()
    v = g.vector("v", 5, value=x)
    gv = ev.grad(ev.sum(ev.clip(v, -1.0, 0.5)), v)
    ev.LispMachine(g, outputs=[gv]).run()
    np.testing.assert_array_equal(gv.value, [0, 1, 1, 1, 0])   # the bounds themselves pass
    assert ev.check_grad(weighted(lambda a, b: ev.clip(a, b, 1.0)), [x * 0.9, lo])
    with pytest.raises(ev.ExprError, match="above a_max"):
        ev.clip(v, 1.0, 0.0)
    with pytest.raises(ev.ExprError, match="a_min, a_max or both"):
        ev.clip(v)


# -- pad / split ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", "wrap"])
@pytest.mark.parametrize("width", [2, (1, 3), ((0, 2), (3, 1))])
def test_pad_matches_numpy_and_its_gradient_sums_copies_back(mode, width):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    kw = {"constant_values": 0.25} if mode == "constant" else {}
    np.testing.assert_allclose(run_both(lambda a: ev.pad(a, width, mode, **kw), x), np.pad(x, width, mode, **kw))
    assert ev.check_grad(weighted(lambda a: ev.pad(a, width, mode, **kw)), [x])


def test_pad_gradient_counts_every_copy():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.array([1.0, 2.0, 3.0]))
    gx = ev.grad(ev.sum(ev.pad(x, (2, 1), "edge")), x)   # x0 appears 3 times, x2 twice
    ev.TapeMachine(g, outputs=[gx]).run()
    np.testing.assert_array_equal(gx.value, [3, 1, 2])


def test_pad_errors_are_shape_errors_at_build_time():
    g = ev.Graph()
    x = g.matrix("x", (2, 3))
    with pytest.raises(ev.ShapeError, match="(?s)^pad: pad_width -1 has a negative width.*built at test_ops_more"):
        ev.pad(x, -1)
    with pytest.raises(ev.ShapeError, match="does not fit a 2-d operand"):
        ev.pad(x, ((1, 1), (1, 1), (1, 1)))
    with pytest.raises(ev.ShapeError, match="empty axis"):
        ev.pad(g.matrix("e", (0, 3)), 1, "reflect")
    with pytest.raises(ev.ExprError, match="mode must be one of"):
        ev.pad(x, 1, "mean")


@pytest.mark.parametrize("how, axis", [(3, 0), ([1, 4], 1), ([2, -1], 1), ([0, 0, 7], 1), (2, -1)])
def test_split_matches_numpy_and_differentiates(how, axis):
    x = np.random.default_rng(1).uniform(-1, 1, (6, 6))
    want = np.split(x, how, axis=axis)
    for machine in MACHINES:
        g = ev.Graph()
        xn = g.matrix("x", x.shape, value=x)
        pieces = ev.split(xn, how, axis=axis)
        got = EVALUATORS[machine](g, pieces)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)

    def cost(a):
        return ev.sum(ev.concat([p * (k + 1.0) for k, p in enumerate(ev.split(a, how, axis))
                                 if p.size], axis=axis) ** 2)
    assert ev.check_grad(cost, [x])


def test_split_into_unequal_sections_is_an_error():
    g = ev.Graph()
    with pytest.raises(ev.ShapeError, match="does not divide into 4"):
        ev.split(g.vector("x", 6), 4)


# -- var / std / norm / argmax ---------------------------------------------------------------------

@pytest.mark.parametrize("axis, ddof, keepdims", [(None, 0, False), (1, 1, True), ((0, 2), 0, False)])
def test_var_std_match_numpy(axis, ddof, keepdims):
    x = np.random.default_rng(2).uniform(-2, 2, (3, 4, 5))
    kw = dict(axis=axis, ddof=ddof, keepdims=keepdims)
    np.testing.assert_allclose(run_both(lambda a: ev.var(a, **kw), x), np.var(x, **kw))
    np.testing.assert_allclose(run_both(lambda a: ev.std(a, **kw), x), np.std(x, **kw))
    assert ev.check_grad(weighted(lambda a: ev.var(a, **kw)), [x])
    assert ev.check_grad(weighted(lambda a: ev.std(a, **kw)), [x])


def test_std_of_a_constant_row_has_a_zero_gradient_not_nan():
    g = ev.Graph()
    x = g.matrix("x", (2, 3), value=np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]))
    gx = ev.grad(ev.sum(ev.std(x, axis=1)), x)
    ev.TapeMachine(g, outputs=[gx]).run()
    assert np.isfinite(gx.value).all()
    np.testing.assert_array_equal(gx.value[0], 0)
    with pytest.raises(ev.ShapeError, match="(?s)^var: ddof=3 leaves no degrees of freedom.*built at test_ops_more"):
        ev.var(x, axis=1, ddof=3)


@pytest.mark.parametrize("ord, axis", [(None, None), ("fro", (0, 1)), (2, 1), (1, 0), (np.inf, 1), (1, None)])
def test_norm_matches_numpy(ord, axis):
    x = np.random.default_rng(3).uniform(-2, 2, (4, 5) if axis is not None else (7,))
    kw = dict(ord=ord, axis=axis)
    np.testing.assert_allclose(run_both(lambda a: ev.norm(a, **kw), x), np.linalg.norm(x, **kw))
    assert ev.check_grad(weighted(lambda a: ev.norm(a, **kw)), [x])


def test_norm_gradient_at_zero_and_at_ties():
    g = ev.Graph()
    x = g.matrix("x", (2, 3), value=np.array([[0.0, 0.0, 0.0], [3.0, -3.0, 1.0]]))
    g2, ginf = ev.grad(ev.sum(ev.norm(x, axis=1)), x), ev.grad(ev.sum(ev.norm(x, np.inf, axis=1)), x)
    ev.LispMachine(g, outputs=[g2, ginf]).run()
    np.testing.assert_array_equal(g2.value[0], 0)
    np.testing.assert_allclose(ginf.value[1], [0.5, -0.5, 0])    # a tie shares the gradient
    # as numpy: an ord and no axis on a matrix is a matrix norm (2: the largest singular value)
    np.testing.assert_allclose(ev.norm(x.value, 2), np.linalg.norm(x.value, 2), rtol=1e-12)
    with pytest.raises(ev.ExprError, match="ord 3 is not supported over 2 axis"):
        ev.norm(x, 3)
    with pytest.raises(ev.ExprError, match="needs one axis"):
        ev.norm(ev.reshape(x, (1, 2, 3)), 1)


def test_argmax_argmin_take_the_first_extreme_and_have_no_gradient():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 0.0]])
    for fn, npfn in ((ev.argmax, np.argmax), (ev.argmin, np.argmin)):
        for kw in ({}, {"axis": 1}, {"axis": 0, "keepdims": True}, {"axis": -1}, {"keepdims": True}):
            got = run_both(lambda a: fn(a, **kw), x)
            want = npfn(x, **kw)
            assert got.dtype == np.int64 and got.shape == np.shape(want)
            np.testing.assert_array_equal(got, want)
    assert not OPS["argmax"].differentiable and not OPS["argmin"].differentiable
    g = ev.Graph()
    with pytest.raises(ev.ShapeError, match="is empty"):
        ev.argmax(g.matrix("e", (2, 0)), axis=1)


# -- tensordot / einsum --------------------------------------------------------------------------

@pytest.mark.parametrize("sa, sb, axes", [
    ((3, 4), (4, 5), 1), ((2, 3, 4), (3, 4, 2), 2), ((3, 4), (5, 6), 0),
    ((2, 3, 4), (4, 2, 5), ([0, 2], [1, 0])), ((4, 3), (4,), (0, 0)), ((2, 3), (3, 2), ([1, 0], [0, 1]))])
def test_tensordot_matches_numpy_and_differentiates(sa, sb, axes):
    rng = np.random.default_rng(4)
    a, b = rng.uniform(-1, 1, sa), rng.uniform(-1, 1, sb)
    np.testing.assert_allclose(run_both(lambda x, y: ev.tensordot(x, y, axes), a, b), np.tensordot(a, b, axes))
    assert ev.check_grad(weighted(lambda x, y: ev.tensordot(x, y, axes)), [a, b])


def test_tensordot_errors_name_the_axes():
    g = ev.Graph()
    a, b = g.matrix("a", (3, 4)), g.matrix("b", (5, 6))
    with pytest.raises(ev.ShapeError, match="(?s)^tensordot: axis 1 of a \\(3, 4\\) has length 4.*built at test_ops_more"):
        ev.tensordot(a, b, 1)
    with pytest.raises(ev.ShapeError, match="(?s)^tensordot: axis 2 is out of range.*operands: a = a.*built at"):
        ev.tensordot(a, b, ([2], [0]))


@pytest.mark.parametrize("spec, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]), ("i,i->", [(5,), (5,)]),
    ("ij->ji", [(2, 3)]), ("ij->", [(2, 3)]), ("ijk->j", [(2, 3, 4)]), ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]), ("bi,bj->bij", [(2, 3), (2, 4)]), ("i,j->ij", [(3,), (2,)]),
    ("ab,cd->", [(2, 2), (3, 1)])])
def test_einsum_matches_numpy_and_differentiates(spec, shapes):
    rng = np.random.default_rng(5)
    arrays = [rng.uniform(-1, 1, s) for s in shapes]
    np.testing.assert_allclose(run_both(lambda *xs: ev.einsum(spec, *xs), *arrays), np.einsum(spec, *arrays))
    assert ev.check_grad(weighted(lambda *xs: ev.einsum(spec, *xs)), arrays)


def test_einsum_diagonals_evaluate_but_do_not_differentiate():
    x = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(run_both(lambda a: ev.einsum("ii->", a), x), np.trace(x))
    g = ev.Graph()
    xn = g.matrix("x", (3, 3), value=x)
    with pytest.raises(ev.GradError, match="repeat an index"):
        ev.grad(ev.einsum("ii->", xn), xn)


@pytest.mark.parametrize("spec, shapes, msg", [
    ("ij,jk->ik", [(2, 3), (4, 5)], "index 'j' has length 3 and 4"),
    ("ij->ik", [(2, 3)], "output index 'k' appears in no operand"),
    ("...i,...i->...", [(2, 3), (4, 3)], "'...' axes \\(2,\\) and \\(4,\\) do not broadcast"),
    ("i...i...->i", [(2, 3)], "one '...'"),
    ("ij,jk->ik", [(2, 3)], "has 2 operand term"),
    ("ijk->i", [(2, 3)], "names 3 axes"),
    ("ij->ii", [(2, 3)], "repeat an index")])
def test_einsum_errors(spec, shapes, msg):
    g = ev.Graph()
    nodes = [g.tensor(f"a{i}", s) for i, s in enumerate(shapes)]
    with pytest.raises(ev.ShapeError, match=msg):
        ev.einsum(spec, *nodes)


# -- activations -----------------------------------------------------------------------------------

def test_erf_gelu_elu_log2_against_their_definitions():
    x = np.linspace(-4, 4, 17)
    erf = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(run_both(ev.erf, x), erf, rtol=1e-14, atol=1e-15)
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    np.testing.assert_allclose(run_both(ev.gelu, x), x * cdf, rtol=1e-13, atol=1e-15)
    c = math.sqrt(2 / math.pi)
    np.testing.assert_allclose(run_both(lambda a: ev.gelu(a, approximate="tanh"), x),
                               0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3))), rtol=1e-13)
    np.testing.assert_allclose(run_both(lambda a: ev.elu(a, 0.5), x), np.where(x > 0, x, 0.5 * (np.exp(x) - 1)))
    pos = np.array([0.25, 1.0, 8.0, 1000.0])
    np.testing.assert_allclose(run_both(ev.log2, pos), [-2, 0, 3, math.log2(1000)])
    for fn in (ev.erf, ev.gelu, lambda a: ev.gelu(a, approximate="tanh"), lambda a: ev.elu(a, 0.5)):
        assert ev.check_grad(weighted(fn), [x + 0.013])
    with pytest.raises(ev.ExprError, match="approximate"):
        ev.gelu(x, approximate="sigmoid")


def test_elu_of_large_inputs_does_not_overflow():
    x = np.array([-800.0, 0.0, 800.0], np.float32)
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(ev.elu(x), np.array([-1.0, 0.0, 800.0], np.float32))


def test_gelu_and_elu_agree_with_torch():
    require(importlib.util.find_spec("torch") is not None, "PyTorch is not installed")
    import torch
    x = np.linspace(-5, 5, 41)
    t = torch.tensor(x)
    F = torch.nn.functional
    np.testing.assert_allclose(ev.gelu(x), F.gelu(t).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ev.gelu(x, approximate="tanh"), F.gelu(t, approximate="tanh").numpy(), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(ev.elu(x, 0.3), F.elu(t, 0.3).numpy(), rtol=1e-12, atol=1e-14)


def test_every_new_op_evaluates_eagerly_on_arrays():
    x = np.array([[0.5, -1.5], [2.0, 1.0]])
    assert isinstance(ev.var(x), np.ndarray) or np.isscalar(ev.var(x))
    np.testing.assert_allclose(ev.einsum("ij,jk->ik", x, x), x @ x)
    np.testing.assert_allclose(ev.tensordot(x, x, 1), x @ x)
    np.testing.assert_allclose(ev.pad(x, 1, "wrap"), np.pad(x, 1, "wrap"))
    assert [p.shape for p in ev.split(x, 2, axis=1)] == [(2, 1), (2, 1)]


@pytest.mark.parametrize("fn", [ev.max, ev.min])
def test_the_extreme_of_an_empty_axis_is_refused_when_built(fn):
    g = ev.Graph()
    x = g.tensor("x", (0, 3))
    with pytest.raises(ev.ShapeError, match="empty axis"):
        fn(x, axis=0)
    assert fn(x, axis=1).shape == (0,)      # nothing reduced over an empty axis: fine
