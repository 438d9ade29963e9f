"""ev.onnx.load against ONNX Runtime on models built with onnx.helper (an MLP, a convnet,
LSTM and GRU layers, an attention block), on both machines; gradients through imported
graphs against finite differences; fine-tuning; and the typed refusals of what exprvm
does not import, raised before anything is built."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import exprvm as ev  # noqa: E402
import onnx_models as M  # noqa: E402

MODELS = {
    "mlp": M.mlp,
    "convnet": M.convnet,
    "lstm_bidirectional": lambda r: M.recurrent(r),
    "lstm_reverse_lengths": lambda r: M.recurrent(r, direction="reverse", lens=[4, 2]),
    "lstm_clip": lambda r: M.recurrent(r, direction="forward", clip=0.7),
    "gru_bidirectional": lambda r: M.recurrent(r, "GRU"),
    "gru_linear_before_reset": lambda r: M.recurrent(r, "GRU", linear_before_reset=1),
    "gru_lengths": lambda r: M.recurrent(r, "GRU", direction="forward", lens=[3, 4]),
    "attention_opset20": M.attention,
    "attention_opset17": lambda r: M.attention(r, opset=17),
}


@pytest.mark.parametrize("machine", ["tape", "lisp"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_models_match_onnx_runtime(name, machine):
    rng = np.random.default_rng(1)
    m, shapes = MODELS[name](rng)
    feeds = M.feeds_for(m, shapes, rng)
    want = M.ort_run(m, feeds)
    got = M.ev_run(m, feeds, machine, shapes)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert M.rel_diff(a, b) <= 1e-5


def test_a_symbolic_batch_needs_a_shape_and_builds_one_graph_per_shape():
    rng = np.random.default_rng(2)
    m, _ = M.mlp(rng)
    with pytest.raises(ev.OnnxError, match=r"'x' has shape \(N, 8\).*shapes="):
        ev.onnx.load(m)
    for batch in (5, 1):
        feeds = {"x": rng.standard_normal((batch, 8)).astype(np.float32)}
        (got,) = M.ev_run(m, feeds, "tape", shapes={"x": (batch, 8)})
        assert got.shape == (batch, 4) and M.rel_diff(got, M.ort_run(m, feeds)[0]) <= 1e-5
    with pytest.raises(ev.OnnxError, match="does not fit"):
        ev.onnx.load(m, shapes={"x": (5, 9)})


def test_initializers_are_parameters_named_after_them_and_integers_constants():
    g, (x,), (y,) = ev.onnx.load(M.convnet(np.random.default_rng(3))[0])
    names = {p.name for p in g.params()}
    assert names == {"conv.w", "conv.b", "bn.scale", "bn.bias", "bn.mean", "bn.var", "fc.w", "fc.b"}
    # the Reshape's target shape was folded: no Shape / Gather / Concat remains
    assert {n.op for n in ev.ancestors([y])} <= {"input", "param", "const", "conv2d", "add", "mul", "reshape",
                                                 "relu", "max_pool2d", "avg_pool2d", "mean", "matmul",
                                                 "transpose", "softmax", "sqrt", "div", "neg", "getitem", "pad"}


def _as_float64(m):
    """The same model over float64 (for finite differences that can judge a gradient)."""
    m64 = onnx.ModelProto()
    m64.CopyFrom(m)
    for t in m64.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float64), t.name))
    for v in list(m64.graph.input) + list(m64.graph.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return m64


@pytest.mark.parametrize("name", ["mlp", "convnet", "lstm_reverse_lengths", "gru_linear_before_reset",
                                  "attention_opset17"])
def test_gradients_through_imported_graphs_match_finite_differences(name):
    rng = np.random.default_rng(4)
    m, shapes = MODELS[name](rng)
    m = _as_float64(m)
    g, ins, outs = ev.onnx.load(m, shapes=shapes)
    feeds = {n: v.astype(np.float64) if v.dtype.kind == "f" else v
             for n, v in zip(ins, M.feeds_for(m, shapes, rng).values())}
    M.assert_gradients_match_finite_differences(g, outs, feeds, rng)


def test_an_imported_model_fine_tunes():
    rng = np.random.default_rng(5)
    m, _ = M.mlp(rng)
    g, (x,), (logp,) = ev.onnx.load(m, shapes={"x": (32, 8)})
    xs = rng.standard_normal((32, 8)).astype(np.float32)
    ts = (xs[:, 0] > 0).astype(np.int64) + 2 * (xs[:, 1] > 0)
    t = g.tensor("t", (32,), np.int64)
    loss = -ev.mean(ev.sum(logp * ev.one_hot(t, 4, np.float32), axis=1))
    params = g.params()
    ev.grad(loss, params)
    vm = ev.TapeMachine(g, outputs=[loss])
    opt = ev.solvers.Adam(lr=0.02)
    losses = []
    for _ in range(40):
        (value,) = vm.run({x: xs, t: ts})
        losses.append(float(value))
        opt.step(params)
    assert losses[-1] < 0.5 * losses[0]


# -- refusals ---------------------------------------------------------------------------------

def _one(op, inputs, attrs=None, opset=17, outputs=("y",), inits=None, types=None):
    node = helper.make_node(op, list(inputs), list(outputs), name="the_node", **(attrs or {}))
    types = dict(types or {})
    vis = [helper.make_tensor_value_info(n, *types.get(n, (TensorProto.FLOAT, (2, 3)))) for n in inputs
           if n and n not in (inits or {})]
    graph = helper.make_graph([node], "g", vis, [helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(a, n) for n, a in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("model, named", [
    (_one("TopK", ["x", "k"], inits={"k": np.array([1], np.int64)}, outputs=("y", "i")),
     ("TopK", "the_node", "opset 17")),
    (_one("Relu", ["x"], attrs={"bogus": 1}), ("Relu", "the_node", "'bogus'")),
    (_one("Gelu", ["x"], attrs={"approximate": "erf2"}, opset=20), ("Gelu", "approximate='erf2'")),
    (_one("LSTM", ["x", "w", "r"], attrs={"hidden_size": 1, "input_forget": 1}),
     ("LSTM", "the_node", "input_forget=1")),
    (_one("LSTM", ["x", "w", "r"], attrs={"hidden_size": 1, "activations": ["Sigmoid", "Gauss", "Tanh"]}),
     ("LSTM", "activations='Gauss'")),
    (_one("MaxPool", ["x"], attrs={"kernel_shape": [2]}, outputs=("y", "indices")), ("MaxPool", "output 1")),
    (_one("Reshape", ["x", "s"], types={"s": (TensorProto.INT64, (2,))}), ("Reshape", "input 1 ('s') must be known")),
    (_one("Relu", ["x"], opset=12), ("opset 12",)),
])
def test_what_is_not_imported_is_refused_by_name_before_anything_is_built(model, named):
    g = ev.Graph()
    g.scalar("already_there")
    with pytest.raises(ev.OnnxUnsupportedError) as e:
        ev.onnx.load(model, g)
    for word in named:
        assert word.replace("'", "") in str(e.value).replace("'", ""), str(e.value)
    assert len(g.nodes) == 1      # nothing was built into the user's graph


def test_an_input_needed_at_import_can_be_bound_with_values():
    m = _one("Reshape", ["x", "s"], types={"s": (TensorProto.INT64, (2,))})
    assert ev.onnx.import_time_inputs(m) == ["s"]
    g, ins, (y,) = ev.onnx.load(m, values={"s": np.array([3, 2], np.int64)})
    assert [n.name for n in ins] == ["x"] and y.shape == (3, 2)
    with pytest.raises(ev.OnnxError, match="values= binds"):
        ev.onnx.load(m, values={"s": np.array([3, 2], np.int32)})


def test_a_float16_input_is_refused_by_type():
    m = _one("Relu", ["x"])
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    with pytest.raises(ev.OnnxUnsupportedError, match="FLOAT16"):
        ev.onnx.load(m)


def test_importing_exprvm_does_not_import_onnx():
    code = "import sys, exprvm; exprvm.onnx.load; assert 'onnx' not in sys.modules, 'onnx was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).resolve().parents[1])
