"""Graph building's fast paths keep what users get: creation sites at the user's line
(gradient nodes, ev.nn blocks, custom ops' VJPs), sharing of identical nodes, errors
naming the line."""
import inspect
import os

import numpy as np
import pytest

import exprvm as ev
from exprvm.core.body import nested_graphs

PACKAGE_FILES = {f for _, _, files in os.walk(os.path.dirname(ev.__file__)) for f in files if f.endswith(".py")}


def here(offset=0):
    """file:line of the caller's line plus offset, as exprvm reports sites."""
    f = inspect.currentframe().f_back
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno + offset}"


def all_nodes(g):
    """The nodes of g and of every body its loops hold."""
    return [n for graph in nested_graphs(g) for n in graph.nodes]


def test_gradient_nodes_take_the_line_of_the_ev_grad_call():
    g = ev.Graph()
    W = g.matrix("W", (3, 4), value=np.ones((3, 4)))
    x = g.tensor("x", (5, 3))
    cost = ev.sum(ev.tanh(x @ W)[:, 1:3] * 2.0 + ev.sigmoid(x @ W)[:, :2])
    start = len(g)
    ev.grad(cost, [W]); line = here()  # noqa: E702
    assert len(g) > start + 5
    assert {n.site for n in g.nodes[start:]} == {line}
    after = ev.exp(cost); line_after = here()  # noqa: E702
    assert after.site == line_after             # the pinned site is gone once ev.grad returns


def test_gradient_nodes_take_the_users_line_through_a_helper():
    """ev.grad reached through the user's own function: the first frame outside exprvm."""
    def differentiate(cost, wrt):
        return ev.grad(cost, wrt), here()
    g = ev.Graph()
    x = g.vector("x", 4)
    cost = ev.sum(ev.tanh(x) * x)
    start = len(g)
    _, line = differentiate(cost, x)
    assert {n.site for n in g.nodes[start:]} == {line}


@pytest.fixture
def registered():
    """Names of custom ops a test registers, unregistered after it (the op table is global)."""
    names = []
    yield names
    for name in names:
        ev.OPS.pop(name, None)


def test_a_custom_ops_vjp_nodes_point_at_its_own_lines(registered):
    """A user's VJP is user code: the nodes it builds point at its lines, not at ev.grad's."""
    registered.append("test_build_cube")
    vjp_line = here(2)
    cube = ev.defop("test_build_cube", lambda x: x ** 3, lambda x: (x.shape, x.dtype),
                    vjp=lambda g, ans, x: g * 3.0 * ev.square(x))
    g = ev.Graph()
    x = g.vector("x", 4)
    cost = ev.sum(ev.tanh(cube(x)))
    start = len(g)
    gx = ev.grad(cost, x); grad_line = here()  # noqa: E702
    sites = {n.op: n.site for n in g.nodes[start:]}
    assert sites["square"] == vjp_line and sites["unary_grad"] == grad_line
    assert gx.site == vjp_line      # the last product: g * 3.0 * square(x)
    assert ev.check_grad(lambda x: ev.sum(ev.tanh(cube(x))), [np.linspace(-1, 1, 4)])


def test_an_error_in_a_vjp_names_its_line_and_leaves_no_pinned_site(registered):
    registered.append("test_build_broken_vjp")
    vjp_line = here(2)
    broken = ev.defop("test_build_broken_vjp", lambda x: 2 * x, lambda x: (x.shape, x.dtype),
                      vjp=lambda g, ans, x: g @ ev.reshape(x, (2, 2)))
    g = ev.Graph()
    x = g.vector("x", 4)
    cost = ev.sum(ev.tanh(broken(ev.sigmoid(x))))
    with pytest.raises(ev.ShapeError) as e:
        ev.grad(cost, x)
    assert vjp_line in str(e.value) and "matmul" in str(e.value)
    y = ev.tanh(x); line = here()  # noqa: E702
    assert y.site == line and g._site is None


def test_sites_from_nn_blocks_and_their_gradients_are_the_users_lines():
    g = ev.Graph()
    xs = g.tensor("xs", (5, 2, 3), np.float32)
    cell = ev.nn.StackedRNN("lstm", 3, 4, 2, name="rnn", dtype=np.float32, seed=0)
    start = len(g)
    hs, _ = cell.unroll(xs); line = here()  # noqa: E702
    assert {n.site for n in g.nodes[start:]} == {line}
    cost = ev.sum(hs[-1])
    start = len(g)
    ev.grad(cost, cell); grad_line = here()  # noqa: E702
    assert len(g) > start and {n.site for n in g.nodes[start:]} == {grad_line}


def test_every_way_into_an_rnn_gives_its_nodes_the_users_line_and_leaves_no_pin():
    """A stack of exprvm's own cells pins the site once per call (Graph.pin_site) instead
    of probing per node: the sites are the ones a probe finds, and no pin outlives the call."""
    rnn = ev.nn.StackedRNN("gru", 3, 4, 2, name="rnn", seed=0)

    def fresh():
        g = ev.Graph()
        return g, g.tensor("xs", (4, 2, 3), np.float32)

    def check(g, line):
        built = [n for n in all_nodes(g) if not n.is_leaf]
        assert len(built) > 3 and {n.site for n in built} == {line}
        assert all(graph._site is None for graph in nested_graphs(g))
        y = ev.tanh(g.nodes[0]); after = here()  # noqa: E702
        assert y.site == after

    g, xs = fresh(); rnn.unroll(xs); check(g, here())  # noqa: E702
    g, xs = fresh(); rnn.unroll([xs[0], xs[1]]); check(g, here())  # noqa: E702
    g, xs = fresh(); rnn(xs[2]); check(g, here())  # noqa: E702
    g, xs = fresh(); rnn.cells[0](xs[3]); check(g, here())  # noqa: E702
    g, xs = fresh(); rnn.sequence(xs, unroll=True); check(g, here())  # noqa: E702
    g, xs = fresh(); rnn.sequence(xs, unroll=True, lengths=g.tensor("n", (2,), np.int64)); check(g, here())  # noqa: E501,E702
    g, xs = fresh(); rnn.sequence(xs); check(g, here())  # noqa: E702


def test_a_users_cell_points_at_its_own_lines_and_an_error_leaves_no_pin():
    class Doubling(ev.nn.RNNCell):
        def recur(self, xp, state):
            h = ev.tanh(xp * 2.0); line.append(here())  # noqa: E702
            return h, (h,)
    line = []
    g = ev.Graph()
    xs = g.tensor("xs", (3, 2, 3), np.float32)
    rnn = ev.nn.StackedRNN(Doubling, 3, 4, name="d", seed=0)
    start = len(g)
    rnn.unroll(xs); call_line = here()  # noqa: E702
    sites = {n.op: n.site for n in g.nodes[start:]}
    assert sites["tanh"] == line[0] and sites["matmul"] == call_line
    with pytest.raises(ev.ShapeError):
        ev.nn.StackedRNN("lstm", 3, 4, name="l", seed=0).unroll(xs, [(xs[0][:, :2], xs[0][:, :2])])
    assert g._site is None


def test_no_site_points_into_exprvm_through_loops_and_their_gradients():
    g = ev.Graph()
    W = g.matrix("W", (3, 3), value=np.eye(3) * 0.5)
    xs = g.tensor("xs", (4, 2, 3))

    def step(h, x):
        h = ev.tanh(x + h @ W)
        return h, h
    _, hs = ev.scan(step, g.constant(np.zeros((2, 3))), xs)
    ev.grad(ev.sum(hs * hs), [W, xs])
    nodes = all_nodes(g)
    assert len(nodes) > len(g)
    inside = [(n.label, n.site) for n in nodes if n.site.split(":")[0] in PACKAGE_FILES]
    assert not inside


def test_identical_index_nodes_are_shared_and_different_ones_are_not():
    g = ev.Graph()
    z = g.matrix("z", (4, 6))
    assert z[:, 1:3] is z[:, 1:3] and z[1, 2:] is z[1, 2:] and z[..., 2] is z[..., 2]
    distinct = [z[:, 1:3], z[:, 1:4], z[:, 2:3], z[:, 1:3:2], z[1:3], z[1, 2:], z[1], z[:, 1], z[None, 1],
                z[..., 1], z[1, ...], z[np.array([1, 2])], z[1:2, 2:3]]
    assert len({id(n) for n in distinct}) == len(distinct)
    assert z[True].shape == (1, 4, 6) and z[True] is not z[1]
    a = ev.apply("getitem_grad", z[:, 1:3], index=(slice(None), slice(1, 3)), shape=(4, 6))
    assert a is ev.apply("getitem_grad", z[:, 1:3], index=(slice(None), slice(1, 3)), shape=(4, 6))
    assert a is not ev.apply("getitem_grad", z[:, 1:3], index=(slice(None), slice(1, 3)), shape=(4, 7))
    assert a is not ev.apply("getitem_grad", z[:, 1:3], index=(slice(None), slice(3, 5)), shape=(4, 6))


def test_identical_gradients_are_shared():
    """ev.grad twice over one cost builds no new nodes: every gradient node is shared."""
    g = ev.Graph()
    x = g.tensor("x", (3, 8))
    z = x * 2.0
    cost = ev.sum(ev.sigmoid(z[:, :4]) * ev.tanh(z[:, 4:]))
    first = ev.grad(cost, x)
    n = len(g)
    assert ev.grad(cost, x) is first and len(g) == n


def test_python_numbers_beside_a_node_keep_their_side_and_take_its_dtype():
    g = ev.Graph()
    x = g.vector("x", 3, dtype=np.float32)
    v = np.array([0.5, 1.0, 2.0], np.float32)
    built = {"x + 2": (x + 2, v + 2), "2 - x": (2 - x, 2 - v), "x - 2.5": (x - 2.5, v - 2.5),
             "3.0 / x": (3.0 / x, 3.0 / v), "x / 4": (x / 4, v / 4), "2 ** x": (2 ** x, 2 ** v),
             "x ** 3.0": (x ** 3.0, v ** 3), "1.5 * x": (1.5 * x, 1.5 * v),
             "maximum(x, 1)": (ev.maximum(x, 1), np.maximum(v, 1))}
    outs = [node for node, _ in built.values()]
    got = ev.TapeMachine(g, outputs=outs).run({x: v})
    for (what, (node, want)), value in zip(built.items(), got):
        assert node.dtype == np.float32, what
        np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=what)
    assert x * 2.0 is x * 2.0 and (x * 2.0).inputs[1] is (2.0 + x).inputs[0]
    i = g.tensor("i", (3,), np.int64)
    assert (i + 1).dtype == np.int64
    with pytest.raises(ev.DTypeError, match="mix"):
        i + 1.5


def test_a_slice_bound_that_is_no_integer_is_a_shape_error_naming_getitem_and_the_line():
    g = ev.Graph()
    x = g.vector("x", 5)
    s = g.scalar("s", dtype=np.int64)
    bad = (lambda: x[s:3], lambda: x[1.5:3], lambda: x[0:4:0.5]); line = here()  # noqa: E702
    for index in bad:
        with pytest.raises(ev.ShapeError) as e:
            index()
        msg = str(e.value)
        assert "getitem" in msg and "slice indices must be integers" in msg and f"built at {line}" in msg, msg
    with pytest.raises(ev.ShapeError, match="getitem"):
        ev.getitem(np.arange(5.0), (slice(1.5, 3),))


def test_nested_graphs_finds_every_body_once():
    g = ev.Graph()
    h0 = g.vector("h0", 3)
    xs = g.matrix("xs", (4, 3))

    def step(h, x):
        h = ev.cond(ev.sum(x) > 0.0, lambda a: ev.tanh(a), lambda a: a * 0.5, h + x)
        return h, h

    h, ys = ev.scan(step, h0, xs)
    graphs = nested_graphs(g)
    assert graphs[0] is g and len(graphs) == 4 and len({id(x) for x in graphs}) == 4   # g, step, true, false
    assert all(x is g or x.parent is not None for x in graphs)
