"""numpy users' code on nodes: numpy's dispatch protocols, the value protocol of a node
after a run, lists of nodes, eager shape rules, and the numpy semantics of dot, power's
gradient at 0, norm's ords, einsum's '...' and sublists, sort, partition and prod."""
import re
from pathlib import Path

import numpy as np
import pytest

import exprvm as ev
from exprvm.core import OPS
from exprvm.ops import FUNCTIONS, numpy_api
from machines import EVALUATORS
from test_ops_table import make_arg, sample as op_sample

ROOT = Path(__file__).resolve().parents[1]


def run_both(g, outs):
    return {m: EVALUATORS[m](g, outs) for m in EVALUATORS}

# -- dot is numpy.dot ---------------------------------------------------------------------------


DOT_SHAPES = [((2, 3), (2, 3, 4)), ((2, 2, 3), (2, 3, 4)), ((3,), (2, 3, 4)), ((2, 2, 3), (3,)),
              ((), (3,)), ((2, 3), (3,)), ((3,), (3,)), ((2, 3), (3, 4)), ((2, 1, 3), (5, 3, 2))]


@pytest.mark.parametrize("sa, sb", DOT_SHAPES)
def test_dot_is_numpy_dot(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    want = np.dot(a, b)
    np.testing.assert_allclose(ev.dot(a, b), want, rtol=1e-12)
    g = ev.Graph()
    A, B = g.tensor("a", sa, value=a), g.tensor("b", sb, value=b)
    y = ev.dot(A, B)
    assert y.shape == want.shape
    for got in run_both(g, [y]).values():
        np.testing.assert_allclose(got[0], want, rtol=1e-12, atol=1e-12)
    w = rng.uniform(0.5, 1.5, want.shape)
    assert ev.check_grad(lambda x, z: ev.sum(ev.dot(x, z) * w), [a, b])

# -- power at base 0 ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_power_gradients_at_base_zero(dtype):
    g = ev.Graph()
    x = g.tensor("x", (3,), dtype, value=np.array([0.0, 0.0, 2.0], dtype))
    y = g.tensor("y", (3,), dtype, value=np.array([0.0, 1.3, 1.5], dtype))
    cost = ev.sum(ev.power(x, y))
    gx, gy = ev.grad(cost, [x, y])
    for got_x, got_y in run_both(g, [gx, gy]).values():
        np.testing.assert_allclose(got_x, [0.0, 0.0, 1.5 * 2.0 ** 0.5], rtol=1e-6)
        np.testing.assert_allclose(got_y, [0.0, 0.0, 2.0 ** 1.5 * np.log(2.0)], rtol=1e-6)
    ev.LispMachine(g, cost=cost, replay=False).run()
    assert np.isfinite(x.grad).all() and np.isfinite(y.grad).all()
    np.testing.assert_allclose(y.grad, [0.0, 0.0, 2.0 ** 1.5 * np.log(2.0)], rtol=1e-6)


def test_power_at_zero_passes_check_grad_first_and_second_order():
    assert ev.check_grad(lambda y: ev.power(0.0, y), [np.array(0.3)])
    assert ev.check_grad(lambda x: ev.power(x, 0.0), [np.array(0.0)])
    assert ev.check_grad(lambda x: ev.sum(ev.grad(ev.sum(ev.power(x, 3.0)), x)), [np.array([0.0, 1.5])])

# -- lists of nodes are stacked ----------------------------------------------------------------


def test_statistics_of_a_list_of_nodes():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.array([1.0, -2.0, 0.5]))
    for fn in (ev.std, ev.var, ev.norm, ev.mean, ev.sum, ev.max, ev.prod):
        y = fn([x, x + 2, [1.0, 2.0, 3.0]])
        want = fn(np.stack([x.value, x.value + 2, [1.0, 2.0, 3.0]]))
        for got in run_both(g, [y]).values():
            np.testing.assert_allclose(got[0], want, rtol=1e-12, err_msg=fn.__name__)


def _single_array_ops():
    for name, op in sorted(OPS.items()):
        row = op.row
        if row is None or op.variadic or row.random or not row.args or row.args[0][0] != "f" or len(row.args[0][1]) < 1:
            continue
        yield name


@pytest.mark.parametrize("name", list(_single_array_ops()))
def test_every_op_stacks_a_list_given_for_an_array(name):
    arrays, params = op_sample(name, np.float64)
    g = ev.Graph()
    leaves = [g.tensor(f"a{i}", a.shape, a.dtype, value=a) for i, a in enumerate(arrays)]
    rows = [leaves[0][i] for i in range(arrays[0].shape[0])]
    got = ev.apply(name, rows, *leaves[1:], **params)
    assert got is ev.apply(name, ev.stack(rows), *leaves[1:], **params)   # the same node (CSE)


@pytest.mark.parametrize("name", sorted(n for n in FUNCTIONS if FUNCTIONS[n].row.args[0][0] == "f"
                                        and len(FUNCTIONS[n].row.args[0][1]) >= 1
                                        and FUNCTIONS[n].call is getattr(ev, n)))
def test_every_function_stacks_a_list_given_for_an_array(name):
    rng = np.random.default_rng(0)
    row = FUNCTIONS[name].row
    arrays = [make_arg(s, np.float64, rng) for s in row.args]
    g = ev.Graph()
    leaves = [g.tensor(f"a{i}", a.shape, value=a) for i, a in enumerate(arrays)]
    listed = FUNCTIONS[name].call([leaves[0][i] for i in range(arrays[0].shape[0])], *leaves[1:], **row.params)
    stacked = FUNCTIONS[name].call(*leaves, **row.params)
    (a, b) = EVALUATORS["tape"](g, [listed, stacked])
    np.testing.assert_array_equal(a, b)

# -- eager calls run the shape rule ------------------------------------------------------------


BINARY = sorted(n for n, op in OPS.items() if op.elementwise and op.row is not None and len(op.row.args) == 2
                and all(s[0] == "f" for s in op.row.args))


@pytest.mark.parametrize("name", BINARY)
def test_eager_binary_ops_refuse_unbroadcastable_arrays(name):
    with pytest.raises(ev.ShapeError, match=name):
        ev.apply(name, np.ones((3, 4)), np.ones(5))
    with pytest.raises(ev.DTypeError, match=name):
        ev.apply(name, np.ones(3, np.float32), np.ones(3))


def test_eager_batch_norm_with_one_value_per_channel_is_an_error():
    with pytest.raises(ev.ShapeError, match="more than one value per channel"):
        ev.batch_norm(np.ones((1, 3)), None, None, training=True)


@pytest.mark.parametrize("call", [lambda: ev.matmul(np.ones((2, 3)), np.ones((4, 2))),
                                  lambda: ev.concat([np.ones((2, 3)), np.ones((3, 2))], axis=0),
                                  lambda: ev.einsum("ij,jk->ik", np.ones((2, 3)), np.ones((2, 3))),
                                  lambda: ev.reshape(np.ones(6), (4, 2)),
                                  lambda: ev.where(np.ones(3) > 0, np.ones(3), np.ones(4))])
def test_eager_shape_errors_are_typed(call):
    with pytest.raises(ev.ShapeError) as e:
        call()
    assert "called at" in str(e.value) or "built at" in str(e.value)

# -- a node's value after a run ----------------------------------------------------------------


def test_node_value_protocol():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.array([1.0, 2.0, 4.0]))
    s, y = ev.sum(x), x * 2
    for fn in (float, int, lambda n: n.item(), np.asarray):
        with pytest.raises(ev.NoValueError, match="no value yet"):
            fn(s)
    ev.TapeMachine(g, outputs=[s, y]).run()
    assert float(s) == 7.0 and int(s) == 7 and s.item() == 7.0
    arr = np.asarray(y)
    np.testing.assert_array_equal(arr, [2.0, 4.0, 8.0])
    arr[0] = 99.0                       # the caller's copy: the machine's buffer is untouched
    assert y.value[0] == 2.0
    assert np.asarray(y, dtype=np.float32).dtype == np.float32
    with pytest.raises(ev.UnsupportedError, match="3 elements"):
        float(y)
    with pytest.raises(TypeError, match="0-d"):
        iter(s)
    with pytest.raises(TypeError, match="0-d"):
        len(s)
    parts = list(y)                     # the first axis, as for an array
    assert [p.shape for p in parts] == [(), (), ()] and len(parts) == 3


def test_node_repr_names_unnamed_nodes_without_none():
    g = ev.Graph()
    x = g.vector("x", 3)
    text = repr(ev.tanh(x))
    assert "None" not in text and re.match(r"<Node tanh#\d+ \(3,\) float64 at .*test_numpy_api\.py:\d+>", text)
    assert repr(x).startswith("<Node 'x' input#0 (3,) float64")

# -- numpy's dispatch --------------------------------------------------------------------------


CASES = {
    "tanh": lambda a, b: np.tanh(a), "sum": lambda a, b: np.sum(a, axis=0),
    "concatenate": lambda a, b: np.concatenate([a, b]), "where": lambda a, b: np.where(a > 1, a, b),
    "method sum": lambda a, b: a.sum(axis=1), "ravel": lambda a, b: a.ravel(),
    "reshape": lambda a, b: a.reshape(3, 2), "np.reshape": lambda a, b: np.reshape(a, (3, 2)),
    "T": lambda a, b: a.T, "array * node": lambda a, b: np.ones(3) * a,
    "scalar * node": lambda a, b: np.float64(2) * a, "add.reduce": lambda a, b: np.add.reduce(a),
    "multiply.outer": lambda a, b: np.multiply.outer(a[0], a[1]), "linalg.norm": lambda a, b: np.linalg.norm(a),
    "stack": lambda a, b: np.stack([a, b]), "%": lambda a, b: a % 1.5, "maximum": lambda a, b: np.maximum(a, 1.0),
    "dot": lambda a, b: np.dot(a, b.T), "einsum": lambda a, b: np.einsum("ij,kj->ik", a, b),
    "einsum ...": lambda a, b: np.einsum("...j,...j->...", a, b),
    "einsum sublists": lambda a, b: np.einsum(a, [0, 1], b, [2, 1], [0, 2]),
    "cumsum": lambda a, b: np.cumsum(a, axis=1), "prod": lambda a, b: np.prod(a, axis=1),
    "sort": lambda a, b: np.sort(-a, axis=1), "diag": lambda a, b: np.diag(a[0]),
    "trace": lambda a, b: np.trace(a[:, :2]), "kron": lambda a, b: np.kron(a, b),
    "cross": lambda a, b: np.cross(a, b), "linspace": lambda a, b: np.linspace(a[0, 0], a[1, 2], 4),
    "tile": lambda a, b: np.tile(a, (2, 1)), "repeat": lambda a, b: np.repeat(a, 2, axis=0),
    "roll": lambda a, b: np.roll(a, 1), "rot90": lambda a, b: np.rot90(a), "hstack": lambda a, b: np.hstack([a, b]),
    "vstack": lambda a, b: np.vstack([a, b]), "zeros_like": lambda a, b: np.zeros_like(a),
    "diff": lambda a, b: np.diff(a), "cumprod": lambda a, b: np.cumprod(a),
    "nuc": lambda a, b: np.linalg.norm(a, "nuc"), "ord 3": lambda a, b: np.linalg.norm(a[0], 3),
    "tril": lambda a, b: np.tril(a), "arctan2": lambda a, b: np.arctan2(a, b), "sinc": lambda a, b: np.sinc(a),
    "expand_dims": lambda a, b: np.expand_dims(a, 1), "take": lambda a, b: np.take(a, [0, 4]),
    "array_split": lambda a, b: np.array_split(a, 2, axis=1)[1],
    "select": lambda a, b: np.select([a > 3, a > 1], [a, b], 0.0), "matmul": lambda a, b: np.matmul(a, b.T),
    "method max": lambda a, b: a.max(axis=0), "method transpose": lambda a, b: a.transpose(1, 0),
    "mod": lambda a, b: np.mod(a, 1.5), "logical": lambda a, b: (a > 1) & ~(b > 2) | (a > 4),
    "isfinite": lambda a, b: np.where(np.isfinite(a), a, 0.0), "rint": lambda a, b: np.rint(a / 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_functions_build_nodes(case):
    g = ev.Graph()
    A, B = np.arange(6.0).reshape(2, 3) - 1.5, np.linspace(0.5, 3, 6).reshape(2, 3)
    a, b = g.matrix("a", (2, 3), value=A), g.matrix("b", (2, 3), value=B)
    y = CASES[case](a, b)
    assert isinstance(y, ev.Node), f"{case} gave {type(y).__name__}"
    want = CASES[case](A, B)
    assert y.shape == np.shape(want)
    for got in run_both(g, [y]).values():
        np.testing.assert_allclose(got[0], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call, names", [
    (lambda a: np.fft.fft(a), "numpy.fft.fft"), (lambda a: np.unique(a), "numpy.unique"),
    (lambda a: np.sum(a, where=a > 0), "where="), (lambda a: np.add(a, a, out=np.empty((2, 3))), "out="),
    (lambda a: np.bitwise_and(a, a), "numpy.bitwise_and"), (lambda a: np.add.at(a, [0], 1.0), "'at'"),
    (lambda a: np.where(a > 0), "where(condition) alone"), (lambda a: np.ravel(a, order="F"), "order='F'")])
def test_unsupported_numpy_calls_are_typed_errors_naming_them(call, names):
    g = ev.Graph()
    a = g.matrix("a", (2, 3))
    with pytest.raises(ev.UnsupportedError) as e:
        call(a)
    assert names in str(e.value)
    assert isinstance(e.value, TypeError)       # numpy's own class for "not implemented"


def test_sum_of_a_bool_node_counts():
    g = ev.Graph()
    x = g.vector("x", 5, value=np.array([1.0, -2.0, 3.0, 0.0, 4.0]))
    n = np.sum(x > 0)
    assert n.dtype == np.int64
    for got in run_both(g, [n]).values():
        assert got[0] == 3 and got[0].dtype == np.int64
    loss = ev.sum(x * ev.astype(n, np.float64))
    assert ev.grad(loss, x) is not None     # the count passes no gradient, the product does

# -- the generated documentation ----------------------------------------------------------------


def _block(text, tag):
    m = re.search(rf"<!-- {tag} -->\n(.*?)<!-- /{tag} -->", text, re.S)
    assert m, f"no {tag} block"
    return m.group(1)


def test_readme_lists_the_covered_numpy_functions():
    readme = (ROOT / "README.md").read_text()
    assert _block(readme, "numpy-functions") == numpy_api.name_list()


def test_docs_table_is_generated_from_the_dispatch_table():
    doc = (ROOT / "docs" / "numpy.md").read_text()
    assert _block(doc, "numpy-table") == numpy_api.markdown_table()
    names = {n for n, _ in ev.numpy_functions()}
    assert {"numpy.tanh", "numpy.sum", "numpy.concatenate", "numpy.linalg.norm", "numpy.add.reduce"} <= names

# -- numpy semantics of the new functions -------------------------------------------------------


@pytest.mark.parametrize("name", ["prod", "cumprod"])
def test_products_have_exact_gradients_at_zeros(name):
    x = np.array([[2.0, 0.0, 3.0, 0.0, 1.5], [0.5, 1.5, 0.0, 2.0, -1.0]])
    fn = {"prod": lambda v: ev.sum(ev.prod(v, axis=1) * np.array([1.0, 2.0])),
          "cumprod": lambda v: ev.sum(ev.cumprod(v, axis=1) * np.arange(1.0, 6.0))}[name]
    assert ev.check_grad(fn, [x])


def test_partition_keeps_numpys_contract():
    x = np.random.default_rng(0).standard_normal((4, 7))
    got = ev.partition(x, 3, axis=1)
    want = np.partition(x, 3, axis=1)
    np.testing.assert_array_equal(got[:, 3], want[:, 3])
    assert (got[:, :3] <= got[:, 3:4]).all() and (got[:, 4:] >= got[:, 3:4]).all()
    assert ev.check_grad(lambda v: ev.sum(ev.partition(v, 3, axis=1)[:, :4] * np.arange(4.0)), [x])


@pytest.mark.parametrize("ord, axis", [(3, 1), (4, 0), (0.5, 1), ("nuc", None), (2, None), (1, None),
                                        (np.inf, (1, 0)), ("fro", None)])
def test_norm_orders_match_numpy(ord, axis):
    x = np.random.default_rng(1).standard_normal((3, 4))
    want = np.linalg.norm(x, ord, axis)
    np.testing.assert_allclose(ev.norm(x, ord, axis), want, rtol=1e-12)
    g = ev.Graph()
    X = g.matrix("x", (3, 4), value=x)
    y = ev.norm(X, ord, axis)
    for got in run_both(g, [y]).values():
        np.testing.assert_allclose(got[0], want, rtol=1e-10)
    assert ev.check_grad(lambda v: ev.sum(ev.norm(v, ord, axis)), [x])


def test_einsum_ellipsis_broadcasts_and_sublists():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((5, 4, 2))
    want = np.einsum("...ij,...jk->...ik", a, b)
    np.testing.assert_allclose(ev.einsum("...ij,...jk->...ik", a, b), want, rtol=1e-12)
    assert ev.check_grad(lambda x, y: ev.sum(ev.einsum("...ij,...jk", x, y) * np.cos(np.arange(want.size))
                                             .reshape(want.shape)), [a, b])
    np.testing.assert_allclose(ev.einsum(a, [Ellipsis, 0, 1], b, [Ellipsis, 1, 2], [Ellipsis, 0, 2]), want,
                               rtol=1e-12)
