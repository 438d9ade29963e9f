"""ev.onnx.load of ONNX Scan, Loop and If (models built with onnx.helper) against ONNX
Runtime on both machines: Scan as ev.scan (axes, directions), Loop as ev.fori_loop / a scan
over its iteration numbers / ev.while_loop, If as ev.cond (or the branch a condition known
at import takes); gradients through imported loops against finite differences; LSTM as
one loop whatever its length; and the typed refusals of what does not import."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import exprvm as ev  # noqa: E402
import onnx_models as M  # noqa: E402
from onnx_control_models import ev_ops  # noqa: E402

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
n = helper.make_node


def _vi(name, t=F, shape=None):
    return helper.make_tensor_value_info(name, t, shape)


def _body(nodes, ins, outs, name="body"):
    return helper.make_graph(nodes, name, [_vi(*i) for i in ins], [_vi(*o) for o in outs])


def _model(nodes, inputs, outputs, inits):
    """A checked model: inputs {name: (type, shape)}, outputs {name: (type, shape)}."""
    g = helper.make_graph(nodes, "model", [_vi(k, *v) for k, v in inputs.items()],
                          [_vi(k, *v) for k, v in outputs.items()],
                          [onnx.numpy_helper.from_array(np.asarray(a), k) for k, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = min(m.ir_version, 10)     # NOTE: what the onnxruntime wheel reads
    onnx.checker.check_model(m, full_check=True)
    return m


def _w(rng, *shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def scan_axes(rng):
    """Two states, two scan inputs (one along axis 1 from the end), two scan outputs (one
    stacked on axis 1, from the end); the body reads the weight W by its outer name."""
    body = _body([n("MatMul", ["a", "W"], ["aw"]), n("Add", ["aw", "h"], ["s0"]), n("Add", ["s0", "b_row"], ["s1"]),
                  n("Tanh", ["s1"], ["h_out"]), n("ReduceSum", ["h_out"], ["r"], keepdims=0),
                  n("Add", ["tot", "r"], ["tot_out"]), n("Mul", ["h_out", "h_out"], ["sq"]),
                  n("Identity", ["h_out"], ["h_copy"])],
                 [("h", F, (3,)), ("tot", F, ()), ("a", F, (3,)), ("b_row", F, (3,))],
                 [("h_out", F, (3,)), ("tot_out", F, ()), ("h_copy", F, (3,)), ("sq", F, (3,))])
    node = n("Scan", ["h0", "t0", "xa", "xb"], ["h", "t", "ys", "zs"], body=body, num_scan_inputs=2,
             scan_input_axes=[0, 1], scan_input_directions=[0, 1], scan_output_axes=[0, -1],
             scan_output_directions=[0, 1])
    inputs = {"h0": (F, (3,)), "t0": (F, ()), "xa": (F, (5, 3)), "xb": (F, (3, 5))}
    return _model([node], inputs, {"h": (F, (3,)), "t": (F, ()), "ys": (F, (5, 3)), "zs": (F, (3, 5))},
                  {"W": _w(rng, 3, 3)})


def scan_reverse(rng):
    body = _body([n("Add", ["s", "x"], ["s1"]), n("Mul", ["s1", "k"], ["s_out"]), n("Identity", ["s_out"], ["y"])],
                 [("s", F, (2,)), ("x", F, (2,))], [("s_out", F, (2,)), ("y", F, (2,))])
    node = n("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1, scan_input_directions=[1],
             scan_output_directions=[1])
    return _model([node], {"s0": (F, (2,)), "x": (F, (6, 2))}, {"s": (F, (2,)), "y": (F, (6, 2))},
                  {"k": np.array(0.9, np.float32)})


X = {"x": (F, (2, 3))}


def _loop_body(cond_out=None, scan_out=False):
    """x_out = tanh(x @ W) + float(i); the condition passed through (or cond_out's nodes)."""
    nodes = [n("MatMul", ["x", "W"], ["xw"]), n("Tanh", ["xw"], ["t"]), n("Cast", ["i"], ["fi"], to=F),
             n("Add", ["t", "fi"], ["x_out"])]
    nodes += cond_out or [n("Identity", ["c"], ["c_out"])]
    outs = [("c_out", B, ()), ("x_out", F, (2, 3))] + ([("x_out_copy", F, (2, 3))] if scan_out else [])
    if scan_out:
        nodes.append(n("Identity", ["x_out"], ["x_out_copy"]))
    return _body(nodes, [("i", I64, ()), ("c", B, ()), ("x", F, (2, 3))], outs)


def loop_fori(rng):
    node = n("Loop", ["M", "", "x0"], ["x"], body=_loop_body())
    return _model([node], {"x0": (F, (2, 3))}, X, {"W": _w(rng, 3, 3), "M": np.array(4, np.int64)})


def loop_scan_outputs(rng):
    node = n("Loop", ["M", "go", "x0"], ["x", "xs"], body=_loop_body(scan_out=True))
    inits = {"W": _w(rng, 3, 3), "M": np.array(5, np.int64), "go": np.array(True)}
    return _model([node], {"x0": (F, (2, 3))}, dict(X, xs=(F, (5, 2, 3))), inits)


def loop_trips_input(rng):
    node = n("Loop", ["M", "", "x0"], ["x"], body=_loop_body())
    return _model([node], {"x0": (F, (2, 3)), "M": (I64, ())}, X, {"W": _w(rng, 3, 3)})


def loop_while(rng):
    """The condition the body computes: sum(x) < limit (an input), at most M iterations."""
    cond = [n("ReduceSum", ["x_out"], ["total"], keepdims=0), n("Less", ["total", "limit"], ["c_out"])]
    node = n("Loop", ["M", "go", "x0"], ["x"], body=_loop_body(cond_out=cond))
    inputs = {"x0": (F, (2, 3)), "limit": (F, ()), "go": (B, ())}
    return _model([node], inputs, X, {"W": _w(rng, 3, 3), "M": np.array(30, np.int64)})


def if_dynamic(rng):
    then = _body([n("MatMul", ["x", "W"], ["y0"]), n("Tanh", ["y0"], ["y"])], [], [("y", F, (2, 3))], "then")
    other = _body([n("Mul", ["x", "two"], ["z"])], [], [("z", F, (2, 3))], "else")
    node = n("If", ["p"], ["out"], then_branch=then, else_branch=other)
    return _model([node], {"x": (F, (2, 3)), "p": (B, ())}, {"out": (F, (2, 3))},
                  {"W": _w(rng, 3, 3), "two": np.array(2.0, np.float32)})


def loop_with_if(rng):
    """A Loop whose body branches on its iteration number; the branch reads W two levels up."""
    then = _body([n("MatMul", ["x", "W"], ["y0"]), n("Tanh", ["y0"], ["y"])], [], [("y", F, (2, 3))], "then")
    other = _body([n("Neg", ["x"], ["z"])], [], [("z", F, (2, 3))], "else")
    body = _body([n("Less", ["i", "two"], ["small"]),
                  n("If", ["small"], ["x_out"], then_branch=then, else_branch=other), n("Identity", ["c"], ["c_out"])],
                 [("i", I64, ()), ("c", B, ()), ("x", F, (2, 3))], [("c_out", B, ()), ("x_out", F, (2, 3))])
    node = n("Loop", ["M", "", "x0"], ["x"], body=body)
    inits = {"W": _w(rng, 3, 3), "M": np.array(4, np.int64), "two": np.array(2, np.int64)}
    return _model([node], {"x0": (F, (2, 3))}, X, inits)


MODELS = {"scan_axes": (scan_axes, {"scan"}), "scan_reverse": (scan_reverse, {"scan"}),
          "loop_fori": (loop_fori, {"scan"}), "loop_scan_outputs": (loop_scan_outputs, {"scan"}),
          "loop_trips_input": (loop_trips_input, {"while_loop"}), "loop_while": (loop_while, {"while_loop"}),
          "if_dynamic": (if_dynamic, {"cond"}), "loop_with_if": (loop_with_if, {"scan", "cond"})}
FEEDS = {"M": [np.array(3), np.array(0)], "p": [np.array(True), np.array(False)],
         "limit": [np.array(6.0, np.float32)], "go": [np.array(True), np.array(False)]}


@pytest.mark.parametrize("machine", ["tape", "lisp"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_loops_and_branches_match_onnx_runtime(name, machine):
    rng = np.random.default_rng(1)
    build, control = MODELS[name]
    m = build(rng)
    g, ins, outs = ev.onnx.load(m)
    assert control <= ev_ops(outs)
    vm = ev.TapeMachine(g, outputs=outs) if machine == "tape" else ev.LispMachine(g, outputs=outs)
    cases = max(len(FEEDS.get(i.name, [0])) for i in ins)
    for k in range(cases):
        feeds = M.feeds_for(m, {}, rng)
        feeds.update({name: v[k % len(v)] for name, v in FEEDS.items() if name in feeds})
        want = M.ort_run(m, feeds)
        got = vm.run({i: feeds[i.name] for i in ins})
        for a, b in zip(got, want):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert M.rel_diff(a, b) <= 1e-5, (name, k, M.rel_diff(a, b))


def test_a_reverse_scan_imports_as_one_and_a_known_condition_as_its_branch():
    g, _, outs = ev.onnx.load(scan_reverse(np.random.default_rng(2)))
    (scan,) = {r.inputs[0] for r in outs}
    assert scan.op == "scan" and scan.params["reverse"]
    m = if_dynamic(np.random.default_rng(2))
    m.graph.input.pop()                       # p: now an initializer, known at import
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(False), "p"))
    g, (x,), (out,) = ev.onnx.load(m)
    assert "cond" not in ev_ops([out]) and out.op == "mul"


def _float64(graph):
    """The same graph (and subgraphs) over float64, for finite differences that can judge
    a gradient."""
    for t in graph.initializer:
        if t.data_type == F:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float64), t.name))
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if v.type.tensor_type.elem_type == F:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for a in node.attribute:
            if a.name == "to" and a.i == F:
                a.i = TensorProto.DOUBLE
            if a.type == onnx.AttributeProto.GRAPH:
                _float64(a.g)
    return graph


@pytest.mark.parametrize("name", ["scan_axes", "loop_scan_outputs", "loop_with_if", "loop_while"])
def test_gradients_through_imported_loops_match_finite_differences(name):
    rng = np.random.default_rng(4)
    m = MODELS[name][0](rng)
    _float64(m.graph)
    g, ins, outs = ev.onnx.load(m)
    feeds = {i: (np.array(9.0) if i.name == "limit" else np.array(True) if i.dtype == np.bool_
                 else rng.standard_normal(i.shape)) for i in ins}
    cost = sum(ev.sum(o * rng.standard_normal(o.shape)) for o in outs)
    params = g.params()
    grads = ev.grad(cost, params)
    symbolic = ev.TapeMachine(g, outputs=[cost] + grads).run(feeds)[1:]
    ev.LispMachine(g, cost=cost, replay=False).run(feeds)
    autodiff = [np.array(p.grad, copy=True) for p in params]
    forward = ev.TapeMachine(g, outputs=[cost], grads=False)
    eps = 1e-6
    for p, sym, auto in zip(params, symbolic, autodiff):
        flat = p.value.reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            orig = flat[i]
            flat[i] = orig + eps
            up = float(forward.run(feeds)[0])
            flat[i] = orig - eps
            down = float(forward.run(feeds)[0])
            flat[i] = orig
            fd = (up - down) / (2 * eps)
            for got in (sym.reshape(-1)[i], auto.reshape(-1)[i]):
                assert abs(got - fd) <= 1e-5 * abs(fd) + 1e-6, (p.name, i, got, fd)


def test_an_lstm_imports_as_one_loop_whatever_its_length():
    sizes = []
    for steps in (8, 400):
        m, _ = M.recurrent(np.random.default_rng(5), "LSTM", direction="forward")
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = steps
        g, _, outs = ev.onnx.load(m)
        assert "scan" in ev_ops(outs)
        sizes.append(len(ev.ancestors(outs)))
    assert sizes[0] == sizes[1]
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1      # one step: no loop
    g, _, outs = ev.onnx.load(m)
    assert "scan" not in ev_ops(outs)


# -- refusals ---------------------------------------------------------------------------------

def _loop(body, m="M", inputs=None, inits=None, outputs=None):
    node = n("Loop", [m, "", "x0"], ["x"] + (["xs"] if len(body.output) > 2 else []), body=body, name="the_loop")
    g = helper.make_graph([node], "model", [_vi(k, *v) for k, v in (inputs or {"x0": (F, (2, 3))}).items()],
                          [_vi(o) for o in (outputs or node.output)],
                          [onnx.numpy_helper.from_array(np.asarray(a), k)
                           for k, a in (inits or {"W": np.ones((3, 3), np.float32),
                                                  "M": np.array(3, np.int64)}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _computed_cond_with_scan_outputs():
    cond = [n("ReduceSum", ["x_out"], ["total"], keepdims=0), n("Less", ["total", "total"], ["c_out"])]
    return _loop(_loop_body(cond_out=cond, scan_out=True))


def _unknown_op_in_body():
    body = _loop_body()
    body.node.append(n("Hardmax", ["x_out"], ["unused"]))
    return _loop(body)


def _sequence_in_branch():
    then = helper.make_graph([n("SequenceConstruct", ["x"], ["s"])], "then", [],
                             [helper.make_tensor_sequence_value_info("s", F, None)])
    node = n("If", ["p"], ["out"], then_branch=then, else_branch=then, name="the_if")
    g = helper.make_graph([node], "model", [_vi("x", F, (2,)), _vi("p", B, ())], [_vi("out")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _no_scan_inputs():
    body = _body([n("Identity", ["s"], ["s_out"])], [("s", F, (2,))], [("s_out", F, (2,))])
    node = n("Scan", ["s0"], ["s"], body=body, num_scan_inputs=0, name="the_scan")
    g = helper.make_graph([node], "model", [_vi("s0", F, (2,))], [_vi("s")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("make, named", [
    (_computed_cond_with_scan_outputs, ("Loop", "the_loop", "opset 17", "body", "scan outputs")),
    (lambda: _loop(_loop_body(scan_out=True), inputs={"x0": (F, (2, 3)), "M": (I64, ())},
                   inits={"W": np.ones((3, 3), np.float32)}), ("Loop", "the_loop", "input 0 (M) must be known")),
    (_unknown_op_in_body, ("Hardmax", "the_loop/body/", "opset 17")),
    (_sequence_in_branch, ("If", "the_if", "then_branch", "sequence_type")),
    (_no_scan_inputs, ("Scan", "the_scan", "num_scan_inputs=0")),
])
def test_what_does_not_import_is_refused_by_name_before_anything_is_built(make, named):
    g = ev.Graph()
    g.scalar("already_there")
    with pytest.raises(ev.OnnxUnsupportedError) as e:
        ev.onnx.load(make(), g)
    for word in named:
        assert word.replace("'", "") in str(e.value).replace("'", ""), str(e.value)
    assert len(g.nodes) == 1      # nothing was built into the user's graph


def test_a_trip_count_needed_at_import_can_be_bound_with_values():
    m = _loop(_loop_body(scan_out=True), inputs={"x0": (F, (2, 3)), "M": (I64, ())},
              inits={"W": np.ones((3, 3), np.float32)})
    assert ev.onnx.import_time_inputs(m) == ["M"]
    g, ins, (x, xs) = ev.onnx.load(m, values={"M": np.array(4, np.int64)})
    assert [i.name for i in ins] == ["x0"] and xs.shape == (4, 2, 3)


def test_loops_whose_values_change_shape_and_branches_that_differ_are_refused():
    body = _body([n("Concat", ["x", "x"], ["x_out"], axis=0), n("Identity", ["c"], ["c_out"])],
                 [("i", I64, ()), ("c", B, ()), ("x", F, (2, 3))], [("c_out", B, ()), ("x_out", F, None)])
    with pytest.raises(ev.OnnxUnsupportedError, match=r"ONNX Loop node 'the_loop' .*change shape"):
        ev.onnx.load(_loop(body))
    then = _body([n("Identity", ["x"], ["y"])], [], [("y", F, None)], "then")
    other = _body([n("ReduceSum", ["x"], ["z"], keepdims=0)], [], [("z", F, None)], "else")
    node = n("If", ["p"], ["out"], then_branch=then, else_branch=other, name="the_if")
    g = helper.make_graph([node], "model", [_vi("x", F, (2, 3)), _vi("p", B, ())], [_vi("out")])
    with pytest.raises(ev.OnnxUnsupportedError, match=r"ONNX If node 'the_if' .*differ"):
        ev.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_body_reading_a_name_defined_nowhere_is_refused():
    body = _loop_body()
    body.node[0].input[1] = "nowhere"
    with pytest.raises(ev.OnnxError, match=r"ONNX Loop node 'the_loop' .*subgraph reads 'nowhere', which is not"):
        ev.onnx.load(_loop(body))
