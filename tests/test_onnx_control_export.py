"""ev.onnx.export of loops and branches: ev.scan, ev.fori_loop, ev.while_loop and ev.cond
leave as ONNX Scan, Loop and If with their bodies as subgraphs, pass onnx.checker (full
check: ONNX's shape inference through the subgraphs) and run on ONNX Runtime to the
TapeMachine's outputs; a round trip (export, import) gives the same outputs on both
machines, as loops again; what has no ONNX form inside a body is refused by name."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import exprvm as ev  # noqa: E402
import onnx_control_models as C  # noqa: E402
from onnx_control_models import ev_ops  # noqa: E402
import onnx_models as M  # noqa: E402

F32 = np.float32


def _ops(graph):
    """Every op_type in an ONNX graph and its subgraphs."""
    out = set()
    for n in graph.node:
        out.add(n.op_type)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out |= _ops(a.g)
    return out


def _exported(name, opset=17):
    g, ins, outs, feeds, onnx_ops, control = C.BUILDS[name](np.random.default_rng(0))
    want = ev.TapeMachine(g, outputs=outs).run(feeds)
    model = ev.onnx.export(g, outs, None, inputs=ins, opset=opset)
    return model, feeds, want, onnx_ops, control


@pytest.mark.parametrize("opset", [17, 13])
@pytest.mark.parametrize("name", sorted(C.BUILDS))
def test_loops_and_branches_leave_as_onnx_control_flow_and_run_the_same_on_onnx_runtime(name, opset):
    model, feeds, want, onnx_ops, _ = _exported(name, opset)
    onnx.checker.check_model(model, full_check=True)
    assert onnx_ops <= _ops(model.graph), _ops(model.graph)
    got = M.ort_run(model, {n.name: v for n, v in feeds.items()})
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert M.rel_diff(a, b) <= 1e-5, (name, M.rel_diff(a, b))


@pytest.mark.parametrize("machine", ["tape", "lisp"])
@pytest.mark.parametrize("name", sorted(C.BUILDS))
def test_a_round_trip_gives_the_same_outputs_and_loops_again(name, machine):
    model, feeds, want, _, control = _exported(name)
    # a Loop's stacked outputs need their trip count at import: the scans with a length input
    values = {k.name: v for k, v in feeds.items() if k.name in ev.onnx.import_time_inputs(model)}
    g, ins, outs = ev.onnx.load(model, values=values)
    assert control <= ev_ops(outs)
    vm = ev.TapeMachine(g, outputs=outs) if machine == "tape" else ev.LispMachine(g, outputs=outs)
    got = vm.run({n: feeds[next(k for k in feeds if k.name == n.name)] for n in ins})
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert M.rel_diff(a, b) <= 1e-6, (name, M.rel_diff(a, b))


def test_captured_weights_are_read_by_their_outer_names_not_copied_into_the_body():
    model, *_ = _exported("scan")
    inits = {t.name for t in model.graph.initializer}
    assert {"W", "U"} <= inits
    (scan,) = [n for n in model.graph.node if n.op_type == "Scan"]
    body = scan.attribute[[a.name for a in scan.attribute].index("body")].g
    read = {i for n in body.node for i in n.input}
    assert {"W", "U"} <= read and not {"W", "U"} & {t.name for t in body.initializer}
    # ONNX's order: the state variables (h, total), then the scan input's row
    assert [len(v.type.tensor_type.shape.dim) for v in body.input] == [2, 0, 2]
    assert [a.ints for a in scan.attribute if a.name == "scan_input_directions"] in ([], [[0]])


def test_a_reverse_scan_sets_every_direction_and_a_length_input_becomes_the_trip_count():
    model, *_ = _exported("scan_reverse")
    (scan,) = [n for n in model.graph.node if n.op_type == "Scan"]
    attrs = {a.name: list(a.ints) for a in scan.attribute if a.ints}
    assert attrs == {"scan_input_directions": [1], "scan_output_directions": [1, 1]}
    model, *_ = _exported("scan_length")
    (loop,) = [n for n in model.graph.node if n.op_type == "Loop"]
    body = loop.attribute[0].g
    # ONNX's order: the iteration number, the condition, then the loop-carried value
    assert [v.type.tensor_type.elem_type for v in body.input] == [onnx.TensorProto.INT64, onnx.TensorProto.BOOL,
                                                                 onnx.TensorProto.FLOAT]
    assert ev.onnx.import_time_inputs(model) == ["n"]


def test_a_scan_with_a_length_input_runs_any_length_on_onnx_runtime():
    g, ins, outs, feeds, *_ = C.scan_length(np.random.default_rng(1), reverse=True)
    model = ev.onnx.export(g, outs, None, inputs=ins)
    vm = ev.TapeMachine(g, outputs=outs)
    for n in (0, 1, 5):
        feeds[ins[2]] = np.array(n)
        want = vm.run(feeds)
        got = M.ort_run(model, {k.name: v for k, v in feeds.items()})
        for a, b in zip(got, want):
            assert a.shape == b.shape and M.rel_diff(a, b) <= 1e-5, n


def test_what_has_no_onnx_form_inside_a_body_is_refused_by_name(tmp_path):
    g = ev.Graph()
    xs = g.tensor("xs", (4, 3), F32)
    w = g.tensor("w", (3,), F32, value=np.ones(3, F32))
    h, hs = ev.scan(lambda h, x: (ev.tanh(h * w + x),) * 2, g.constant(np.zeros(3, F32)), xs)
    (gw,) = ev.grad(ev.sum(hs), [w])
    path = tmp_path / "never.onnx"
    with pytest.raises(ev.OnnxUnsupportedError, match=r"op \w+_grad .* in the body .* has no ONNX form"):
        ev.onnx.export(g, [gw], path)
    _, noisy = ev.scan(lambda c, x: (c, ev.dropout(x, 0.5, seed=0)), g.constant(np.zeros((), F32)), xs)
    with pytest.raises(ev.OnnxUnsupportedError, match="dropout_mask"):
        ev.onnx.export(g, [noisy], path)
    assert not path.exists()
    # the forward scan itself leaves
    ev.onnx.export(g, [h, hs], path)
    assert path.exists()
