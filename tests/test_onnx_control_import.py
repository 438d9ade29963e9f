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
from onnx_models import (B, F, I64, body_graph, if_dynamic, loop_body, loop_fori, loop_scan_outputs,  # noqa: E402
                         loop_trips_input, loop_while, loop_with_if, n, scan_axes, scan_reverse, vi)

MODELS = {"scan_axes": (scan_axes, {"scan"}), "scan_reverse": (scan_reverse, {"scan"}),
          "loop_fori": (loop_fori, {"scan"}), "loop_scan_outputs": (loop_scan_outputs, {"scan"}),
          "loop_trips_input": (loop_trips_input, {"while_loop"}), "loop_while": (loop_while, {"while_loop"}),
          "loop_while_unfed": (lambda r: loop_while(r, fed=False), {"while_loop"}),
          "if_dynamic": (if_dynamic, {"cond"}), "loop_with_if": (loop_with_if, {"scan", "cond"})}
FEEDS = {"M": [np.array(3), np.array(0)], "p": [np.array(True), np.array(False)],
         "limit": [np.array(6.0, np.float32), np.array(30.0, np.float32)], "go": [np.array(True), np.array(False)]}


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
    M.assert_gradients_match_finite_differences(g, outs, feeds, rng)


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
    g = helper.make_graph([node], "model", [vi(k, *v) for k, v in (inputs or {"x0": (F, (2, 3))}).items()],
                          [vi(o) for o in (outputs or node.output)],
                          [onnx.numpy_helper.from_array(np.asarray(a), k)
                           for k, a in (inits or {"W": np.ones((3, 3), np.float32),
                                                  "M": np.array(3, np.int64)}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _computed_cond_with_scan_outputs():
    cond = [n("ReduceSum", ["x_out"], ["total"], keepdims=0), n("Less", ["total", "total"], ["c_out"])]
    return _loop(loop_body(cond_out=cond, scan_out=True))


def _unknown_op_in_body():
    body = loop_body()
    body.node.append(n("Hardmax", ["x_out"], ["unused"]))
    return _loop(body)


def _sequence_in_branch():
    then = helper.make_graph([n("SequenceConstruct", ["x"], ["s"])], "then", [],
                             [helper.make_tensor_sequence_value_info("s", F, None)])
    node = n("If", ["p"], ["out"], then_branch=then, else_branch=then, name="the_if")
    g = helper.make_graph([node], "model", [vi("x", F, (2,)), vi("p", B, ())], [vi("out")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _no_scan_inputs():
    body = body_graph([n("Identity", ["s"], ["s_out"])], [("s", F, (2,))], [("s_out", F, (2,))])
    node = n("Scan", ["s0"], ["s"], body=body, num_scan_inputs=0, name="the_scan")
    g = helper.make_graph([node], "model", [vi("s0", F, (2,))], [vi("s")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("make, named", [
    (_computed_cond_with_scan_outputs, ("Loop", "the_loop", "opset 17", "body", "scan outputs")),
    (lambda: _loop(loop_body(scan_out=True), inputs={"x0": (F, (2, 3)), "M": (I64, ())},
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
    m = _loop(loop_body(scan_out=True), inputs={"x0": (F, (2, 3)), "M": (I64, ())},
              inits={"W": np.ones((3, 3), np.float32)})
    assert ev.onnx.import_time_inputs(m) == ["M"]
    g, ins, (x, xs) = ev.onnx.load(m, values={"M": np.array(4, np.int64)})
    assert [i.name for i in ins] == ["x0"] and xs.shape == (4, 2, 3)


def test_loops_whose_values_change_shape_and_branches_that_differ_are_refused():
    body = body_graph([n("Concat", ["x", "x"], ["x_out"], axis=0), n("Identity", ["c"], ["c_out"])],
                 [("i", I64, ()), ("c", B, ()), ("x", F, (2, 3))], [("c_out", B, ()), ("x_out", F, None)])
    with pytest.raises(ev.OnnxUnsupportedError, match=r"ONNX Loop node 'the_loop' .*change shape"):
        ev.onnx.load(_loop(body))
    then = body_graph([n("Identity", ["x"], ["y"])], [], [("y", F, None)], "then")
    other = body_graph([n("ReduceSum", ["x"], ["z"], keepdims=0)], [], [("z", F, None)], "else")
    node = n("If", ["p"], ["out"], then_branch=then, else_branch=other, name="the_if")
    g = helper.make_graph([node], "model", [vi("x", F, (2, 3)), vi("p", B, ())], [vi("out")])
    with pytest.raises(ev.OnnxUnsupportedError, match=r"ONNX If node 'the_if' .*differ"):
        ev.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_body_reading_a_name_defined_nowhere_is_refused():
    body = loop_body()
    body.node[0].input[1] = "nowhere"
    with pytest.raises(ev.OnnxError, match=r"ONNX Loop node 'the_loop' .*subgraph reads 'nowhere', which is not"):
        ev.onnx.load(_loop(body))
