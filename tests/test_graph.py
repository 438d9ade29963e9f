"""Graph building: leaves, operators, dtype rules, hash-consing, rewrites, errors."""
import inspect

import numpy as np
import pytest

import exprvm as ev


def here(offset=0):
    """file:line of the caller's line plus offset, as exprvm reports sites."""
    f = inspect.currentframe().f_back
    return f"test_graph.py:{f.f_lineno + offset}"


def test_leaves_and_values():
    g = ev.Graph()
    x = g.scalar("x")
    W = g.matrix("W", (3, 4), init=ev.init.glorot_normal(seed=1), dtype=np.float32)
    b = g.vector("b", 3, init=ev.init.zeros(), dtype=np.float32)
    assert (x.shape, x.dtype, x.op) == ((), np.float64, "input")
    assert (W.shape, W.dtype, W.op) == ((3, 4), np.float32, "param")
    assert W.value.dtype == np.float32 and np.all(b.value == 0)
    assert g.inputs() == [x] and g.params() == [W, b]
    arr = np.ones((2, 2))
    s = g.tensor("s", (2, 2), value=arr)
    assert s.value is arr  # bound as is: solvers updating it in place are seen by machines


def test_operators_build_numpy_named_ops():
    g = ev.Graph()
    a, b = g.vector("a", 3), g.vector("b", 3)
    ops = {a + b: "add", a - b: "sub", a * b: "mul", a / b: "div", a ** b: "pow", -a: "neg",
           abs(a): "abs", a < b: "lt", a <= b: "le", a > b: "gt", a >= b: "ge", a[1:]: "getitem",
           2.0 * a: "mul", 1.0 - a: "sub", 1.0 / a: "div"}
    for node, op in ops.items():
        assert node.op == op
    m = g.matrix("m", (3, 3))
    assert (m @ a).op == "matmul" and (m @ a).shape == (3,) and m.T.op == "transpose"
    assert ev.equal(a, b).dtype == bool and (a == a) is True  # == stays identity (dict keys)


def test_python_scalars_take_the_other_dtype():
    g = ev.Graph()
    v = g.vector("v", 4, dtype=np.float32)
    assert (v * 2.0 + 1).dtype == np.float32
    c = g.constant(2.0)  # weak: adopts float32 next to v
    assert (c * v).dtype == np.float32
    assert g.constant(np.float64(2.0), dtype=np.float64).weak is False


def test_mixing_float32_and_float64_is_an_error_naming_op_nodes_and_line():
    g = ev.Graph()
    a = g.vector("a", 4, dtype=np.float32)
    b = g.vector("b", 4, dtype=np.float64)
    line = here(2)
    with pytest.raises(ev.DTypeError) as e:
        a + b
    msg = str(e.value)
    assert "add" in msg and "float32" in msg and "float64" in msg and "a (4,)" in msg and "b (4,)" in msg
    assert line in msg
    assert isinstance(e.value, ev.ExprError)
    assert (ev.astype(a, np.float64) + b).dtype == np.float64


def test_shape_error_names_op_operands_and_line():
    g = ev.Graph()
    W, v = g.matrix("W", (3, 4)), g.vector("v", 3)
    line = here(2)
    with pytest.raises(ev.ShapeError) as e:
        W @ v
    msg = str(e.value)
    assert "matmul" in msg and "W (3, 4)" in msg and "v (3,)" in msg and line in msg
    with pytest.raises(ev.ShapeError, match="broadcast"):
        g.matrix("A", (2, 3)) + g.vector("c", 4)
    with pytest.raises(ev.ShapeError, match="axis"):
        ev.sum(W, axis=2)
    with pytest.raises(ev.ShapeError, match="reshape"):
        ev.reshape(W, (5, 2))
    with pytest.raises(ev.DTypeError, match="integer"):
        ev.take(W, g.vector("f", 2), axis=0)


def test_sites_point_at_the_user_line():
    g = ev.Graph()
    x = g.scalar("x"); line = here()  # noqa: E702
    y = ev.tanh(x); line_y = here()  # noqa: E702
    assert x.site == line and y.site == line_y


def test_sites_through_every_way_of_building_a_node():
    """Operators, op functions, wrappers (take, sum, getitem), constants made on the way,
    and blocks of ev.nn all report the user's line, not one inside exprvm."""
    g = ev.Graph()
    v = g.vector("v", 3, value=np.ones(3)); at = {"vector": (v, here())}  # noqa: E702
    W = g.matrix("W", (3, 3), value=np.eye(3)); at["matrix"] = (W, here())  # noqa: E702
    at["add"] = (v + W[0], here())
    at["getitem"] = (W[1], here())
    at["radd"] = (2.0 + v, here())
    at["matmul"] = (W @ v, here())
    at["neg"] = (-v, here())
    at["tanh"] = (ev.tanh(v), here())
    at["take"] = (ev.take(W, np.array([0, 2])), here())
    at["sum"] = (ev.sum(v, axis=0), here())
    at["const"] = ((v * np.arange(3.0)).inputs[1], here())
    lin = ev.nn.Linear(3, 2, name="lin", seed=0, dtype=np.float64)
    at["linear"] = (lin(ev.reshape(v, (1, 3))), here())
    for what, (node, line) in at.items():
        assert node.site == line, what


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 4), (0, 3)])
def test_index_shapes_are_numpys(shape):
    """Plain int/slice indexes take a fast path for their shape; every index, fast or
    not, gives numpy's shape, and one numpy rejects is a ShapeError."""
    import itertools
    g = ev.Graph()
    x = g.tensor("x", shape)
    a = np.empty(shape)
    parts = [0, 1, -1, 3, -5, 7, True, np.int64(1), None, Ellipsis, slice(None), slice(1, 3),
             slice(None, None, -1), slice(-2, None), slice(5, 1), slice(0, 10, 3)]
    for k in (1, 2, 3):
        for index in itertools.product(parts, repeat=k):
            try:
                want = a[index].shape
            except IndexError:
                with pytest.raises(ev.ShapeError, match="does not fit"):
                    x[index]
                continue
            assert x[index].shape == want, index


def test_op_nodes_have_every_field_a_leaf_has():
    """build_node makes an op node without Node.__init__ (graph.init_node on a bare
    object): every slot must be set, with a leaf's defaults."""
    g = ev.Graph()
    x = g.tensor("x", (2, 3))
    y = ev.tanh(x * 2.0)
    for slot in ev.Node.__slots__:
        if slot != "__weakref__":
            assert hasattr(y, slot), slot
    for field in ("value", "grad", "grad_of", "weak", "role"):
        assert getattr(y, field) == getattr(x, field), field
    assert y.name is None and y.site == x.site.split(":")[0] + f":{int(x.site.split(':')[1]) + 1}"
    assert (y.id, y.op, y.opdef.name, y.shape, y.dtype) == (len(g.nodes) - 1, "tanh", "tanh", (2, 3), x.dtype)


def test_identical_subexpressions_are_shared():
    g = ev.Graph()
    x, y = g.vector("x", 3), g.vector("y", 3)
    assert ev.tanh(x * y) is ev.tanh(x * y)
    assert ev.sum(x, axis=0) is ev.sum(x, axis=(0,))
    assert (x + 1.0) is (x + 1.0)
    assert ev.tanh(x) is not ev.tanh(y)
    n = len(g)
    ev.tanh(x * y)
    assert len(g) == n


def _exact(fn, xs):
    """fn over exact decimal expansions of the floats xs (60 digits), rounded once."""
    import decimal
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        return np.array([float(v) for v in fn([decimal.Decimal(float(x)) for x in xs])])


def _log_softmax_exact(ds):
    total = sum(d.exp() for d in ds)
    return [d - total.ln() for d in ds]


# NOTE: inputs where the plain formula loses digits (1 + 1e-13 keeps 3 of x's 16; softmax
# of -800 underflows to 0 and its log is -inf), so that the test shows the rewrite is more
# accurate, not merely close to the unstable form.
TINY = np.array([-3e-13, -1e-15, 1e-14, 2e-13, 7e-12])
WIDE = np.array([0.0, -30.0, -800.0, -1000.0, 5.0])


@pytest.mark.parametrize("build, op, xs, exact", [
    (lambda x: ev.log(1 + x), "log1p", TINY, lambda ds: [(1 + d).ln() for d in ds]),
    (lambda x: ev.log(x + 1.0), "log1p", TINY, lambda ds: [(d + 1).ln() for d in ds]),
    (lambda x: ev.exp(x) - 1, "expm1", TINY, lambda ds: [d.exp() - 1 for d in ds]),
    (lambda x: ev.log(ev.softmax(x)), "log_softmax", WIDE, _log_softmax_exact),
])
def test_stability_rewrites_are_more_accurate_than_the_plain_formula(build, op, xs, exact):
    g = ev.Graph()
    x = g.vector("x", 5, value=xs)
    y = build(x)
    assert y.op == op
    ev.LispMachine(g, outputs=[y], replay=False).run()
    want = _exact(exact, xs)
    # within 2 ulp, of the result or (log_softmax's x - lse cancels) of the inputs
    np.testing.assert_allclose(y.value, want, rtol=4e-16, atol=4e-16 * np.abs(xs).max())
    with np.errstate(divide="ignore"):
        plain = build(x.value)      # eager evaluation applies the plain formula
    err = np.abs(plain - want) / np.abs(want)
    assert np.nanmax(np.where(np.isfinite(err), err, np.inf)) > 1e-6, "the plain form should lose digits"


@pytest.mark.parametrize("build, op, power", [(lambda x: x ** 2, "square", 2), (lambda x: x ** 3, "cube", 3)])
def test_power_rewrites_are_exactly_rounded_products(build, op, power):
    g = ev.Graph()
    xs = np.array([-1.7, -1e-9, 3e-5, 0.1, 123.456])
    x = g.vector("x", 5, value=xs)
    y = build(x)
    assert y.op == op
    ev.LispMachine(g, outputs=[y], replay=False).run()
    np.testing.assert_allclose(y.value, _exact(lambda ds: [d ** power for d in ds], xs), rtol=4e-16, atol=0)


def test_log_sigmoid_becomes_minus_softplus_and_stays_finite():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.array([-800.0, 0.0, 800.0]))
    y = ev.log(ev.sigmoid(x))
    assert y.op == "neg" and y.inputs[0].op == "softplus"
    ev.LispMachine(g, outputs=[y], nan_watch=True, inf_watch=True).run()
    np.testing.assert_allclose(y.value, [-800.0, -np.log(2), 0.0])


def test_eager_evaluation_on_arrays():
    x = np.array([0.5, -1.0], np.float32)
    assert ev.tanh(x).dtype == np.float32
    np.testing.assert_allclose(ev.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(ev.sum(np.ones((2, 3)), axis=1), [3, 3])


def test_custom_op_with_its_own_vjp():
    def rule(x):
        return x.shape, x.dtype

    swish = ev.defop("test_swish", lambda x: x / (1 + np.exp(-x)), rule,
                     vjp=lambda g, ans, x: g * (ev.sigmoid(x) + ans * (1 - ev.sigmoid(x))))
    try:
        assert ev.check_grad(lambda x: ev.sum(swish(x)), [np.linspace(-2, 2, 7)])
        bad = ev.defop("test_bad", np.sin, rule, vjp=lambda g, ans, x: g * ev.sin(x))
        with pytest.raises(ev.GradCheckError, match="argument 0"):
            ev.check_grad(lambda x: ev.sum(bad(x)), [np.linspace(-2, 2, 7)])
        with pytest.raises(ev.ExprError, match="already registered"):
            ev.defop("test_swish", np.sin, rule)
    finally:
        ev.OPS.pop("test_swish", None)
        ev.OPS.pop("test_bad", None)


def test_let_validates_and_names_the_input():
    g = ev.Graph()
    v = g.vector("v", 4, dtype=np.float32)
    ev.let(v, [1, 2, 3, 4])
    assert v.value.dtype == np.float32
    with pytest.raises(ev.FeedError, match="v.*shape"):
        ev.let(v, np.ones(3, np.float32))
    with pytest.raises(ev.FeedError, match="v.*float64"):
        ev.let(v, np.ones(4))
    with pytest.raises(ev.FeedError, match="computed"):
        ev.let(ev.tanh(v), np.ones(4, np.float32))


def test_truth_value_of_a_node_is_an_error():
    g = ev.Graph()
    with pytest.raises(ev.ExprError, match="truth value"):
        if g.scalar("x") > 0:
            pass


def test_nodes_of_two_graphs_do_not_mix():
    a, b = ev.Graph().scalar("a"), ev.Graph().scalar("b")
    with pytest.raises(ev.ExprError, match="another graph"):
        a + b


def test_ancestors_is_topological():
    g = ev.Graph()
    x = g.vector("x", 3)
    y = ev.tanh(x) * x + ev.sum(x)
    order = ev.ancestors([y])
    pos = {n.id: i for i, n in enumerate(order)}
    assert all(pos[i.id] < pos[n.id] for n in order for i in n.inputs)
    assert order[-1] is y
