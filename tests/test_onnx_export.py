"""ev.onnx.export: the MLP, the digits convnet in eval mode and the char-RNN LSTM step
(unrolled; the scan form: test_onnx_control_export.py) leave as ONNX models that onnx.checker accepts and ONNX Runtime runs to the
TapeMachine's outputs; a round trip (export, import) gives the same outputs; ops without
an ONNX form are refused by name."""
import pathlib
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import exprvm as ev  # noqa: E402
import onnx_control_models as C  # noqa: E402
import onnx_models as M  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
import char_rnn  # noqa: E402
import digits_convnet  # noqa: E402
import mlp as mlp_example  # noqa: E402

F32 = np.float32


def _mlp():
    model = mlp_example.mlp(64, 32, 10, seed=0)
    g = ev.Graph("mlp")
    x = g.tensor("x", (16, 64), F32)
    return g, [x], [ev.softmax(model(x), axis=-1)]


def _digits():
    model = digits_convnet.convnet(seed=0)
    rng = np.random.default_rng(0)
    for name, a in model.parameters().items():     # trained-looking running statistics
        if name.endswith("running_mean"):
            a[...] = rng.uniform(-0.3, 0.3, a.shape)
        elif name.endswith("running_var"):
            a[...] = rng.uniform(0.5, 1.5, a.shape)
    ev.nn.set_training(model, False)
    g = ev.Graph("digits")
    x = g.tensor("x", (4, 1, 8, 8), F32)
    return g, [x], [model(x)]


def _char_rnn_step():
    model = char_rnn.CharModel(vocab=20, cell="lstm", hidden=16, layers=2, seed=0)
    g = ev.Graph("char_rnn_step")
    ids = g.tensor("ids", (5, 3), np.int32)
    state0 = model.rnn.state_inputs(g, 3)
    hs, final = model.rnn.unroll(ids, state0)
    logits = model.head(ev.stack(hs))
    return g, [ids] + ev.nn.flat(state0), [logits] + ev.nn.flat(final)


def _ops_more():
    """Ops the three models do not use: slices and indexing, reductions, pads, gelu, ..."""
    g = ev.Graph("more")
    x = g.tensor("x", (2, 3, 4), F32)
    w = g.tensor("w", (4, 3), F32, value=np.linspace(-1, 1, 12, dtype=F32).reshape(4, 3))
    y = ev.concat([x[:, ::-1, 1:3], x[..., -2:]], axis=-1)
    z = ev.gelu(ev.pad(x, ((0, 0), (1, 0), (0, 2)), mode="reflect")[:, 1:, :4]) + ev.elu(x, 0.3)
    outs = [y, z, ev.clip(x @ w, -0.5, 0.7), ev.var(x, axis=(0, 2), ddof=1), ev.logsumexp(x, axis=1),
            ev.where(x > 0.1, ev.expm1(x), ev.log1p(ev.abs(x))), ev.layer_norm(x, (4,)), ev.std(x, axis=2),
            x[1, None, 2], ev.take(x, np.array([2, 0, 2]), axis=1), ev.transpose(x, (2, 0, 1)),
            ev.leaky_relu(x, 0.2) ** 2, ev.einsum("abc,cd->abd", x, w), ev.mean(x, axis=(1,), keepdims=True)]
    return g, [x], outs


def _ops_rest():
    """The rest of the export table: activations, comparisons, casts, pools, ids."""
    g = ev.Graph("rest")
    x = g.tensor("x", (2, 3, 6, 6), F32)
    t = g.tensor("t", (2,), np.int64)
    v = ev.reshape(x[:, 0], (2, 36))[:, :5]
    w = g.tensor("w", (4, 3, 3), F32, value=np.linspace(-1, 1, 36, dtype=F32).reshape(4, 3, 3))
    wide = ev.broadcast_to(ev.sum(v, axis=1, keepdims=True), (2, 5))
    outs = [ev.round(v, 1) + ev.sign(v) + ev.floor(v) * ev.ceil(v), ev.sin(v) * ev.cos(v) + ev.cube(v) - ev.square(v),
            ev.log2(ev.abs(v) + 1.0), ev.astype(v > 0.2, F32) + ev.astype(ev.equal(v, v), F32),
            ev.astype(ev.not_equal(v, 0.5), F32) + ev.astype(v <= 0.0, F32) + ev.astype(v >= 0.1, F32) + ev.astype(v < -0.3, F32),
            ev.maximum(v, 0.1) + ev.minimum(v, -0.1), ev.outer(v[0], v[1]), ev.stop_gradient(v) + wide,
            ev.max(v, axis=1) - ev.min(v, axis=0)[:2], ev.sigmoid(v) * ev.softplus(v) * ev.tanh(v),
            ev.argmax(v, axis=1), ev.argmin(v), ev.cross_entropy(v, t), ev.one_hot(t, 7, F32),
            ev.log_softmax(v, axis=0), ev.avg_pool2d(x, 3, stride=2, padding=1),
            ev.conv1d(x[:, :, 0], w, stride=2, padding=1, dilation=1),
            ev.batch_norm(x, None, None, training=True), ev.exp(v) / ev.sqrt(ev.abs(v) + 1.0),
            ev.log(ev.abs(v) + 2.0) + ev.erf(v) + (ev.abs(v) + 0.5) ** 1.5]
    return g, [x, t], outs


BUILDS = {"mlp": _mlp, "digits_convnet": _digits, "char_rnn_lstm_step": _char_rnn_step, "ops": _ops_more,
          "ops_rest": _ops_rest}


def _feeds(ins, rng):
    return {n: (rng.integers(0, 5 if n.name == "t" else 20, n.shape).astype(n.dtype) if n.dtype.kind in "iu"
                else rng.standard_normal(n.shape).astype(n.dtype)) for n in ins}


@pytest.mark.parametrize("opset", [17, 13])
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_exported_models_pass_the_checker_and_run_the_same_on_onnx_runtime(tmp_path, name, opset):
    g, ins, outs = BUILDS[name]()
    feeds = _feeds(ins, np.random.default_rng(1))
    want = ev.TapeMachine(g, outputs=outs).run(feeds)
    path = tmp_path / f"{name}.onnx"
    model = ev.onnx.export(g, outs, path, inputs=ins, opset=opset)
    onnx.checker.check_model(onnx.load(path))
    assert [i.name for i in model.graph.input] == [n.name for n in ins]
    got = M.ort_run(model, {n.name: v for n, v in feeds.items()})
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert M.rel_diff(a, b) <= 1e-5
    # and back: the round trip computes the same on both machines
    for machine in ("tape", "lisp"):
        back = M.ev_run(onnx.load(path), {n.name: v for n, v in feeds.items()}, machine)
        for a, b in zip(back, want):
            assert M.rel_diff(a, b) <= 1e-6


def test_every_row_of_the_export_table_is_exercised_here_or_by_the_control_flow_tests():
    from exprvm.onnx.export_table import EXPORTS
    from onnx_control_models import ev_ops
    seen = set()
    for build in BUILDS.values():
        g, ins, outs = build()
        seen |= ev_ops(outs)
    for build in C.BUILDS.values():
        seen |= ev_ops(build(np.random.default_rng(0))[2])
    assert set(EXPORTS) - {"copy"} <= seen, sorted(set(EXPORTS) - seen)   # copy: made by the compiler only


def test_parameters_leave_with_their_names_and_current_values(tmp_path):
    g, ins, outs = _mlp()
    params = {p.name: p for p in g.params()}
    params["fc0.b"].value[...] = 0.25           # as a solver's step would
    model = ev.onnx.export(g, outs, None)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(params) <= set(inits)
    np.testing.assert_array_equal(inits["fc0.b"], params["fc0.b"].value)


def test_ops_without_an_onnx_form_are_refused_by_name_and_nothing_is_written(tmp_path):
    g = ev.Graph()
    x = g.tensor("x", (3, 4), F32)
    w = g.tensor("w", (4,), F32, value=np.ones(4, F32))
    gw = ev.grad(ev.sum(ev.tanh(x @ w)), w)
    path = tmp_path / "never.onnx"
    with pytest.raises(ev.OnnxUnsupportedError, match=r"op unary_grad .* has no ONNX form"):
        ev.onnx.export(g, [gw], path)
    noisy = ev.dropout(x, 0.5, seed=0)
    with pytest.raises(ev.OnnxUnsupportedError, match="dropout_mask"):
        ev.onnx.export(g, [noisy], path)
    assert not path.exists()
    with pytest.raises(ev.OnnxError, match="not among inputs="):
        ev.onnx.export(g, [ev.tanh(x)], path, inputs=[])


def test_an_imported_recurrence_is_a_scan_and_leaves_as_an_onnx_scan_or_unrolled(tmp_path):
    m, _ = M.recurrent(np.random.default_rng(3), lens=[4, 2])
    feeds = M.feeds_for(m, {}, np.random.default_rng(4))
    want = M.ort_run(m, feeds)
    for unroll in (False, True):
        g, ins, outs = ev.onnx.load(m, unroll=unroll)
        assert ("scan" in {n.op for n in ev.ancestors(outs)}) != unroll
        again = ev.onnx.export(g, outs, tmp_path / "again.onnx")
        assert ("Scan" in {n.op_type for n in again.graph.node}) != unroll
        for a, b in zip(M.ort_run(again, feeds), want):
            assert M.rel_diff(a, b) <= 1e-6
