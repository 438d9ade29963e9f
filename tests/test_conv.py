"""Convolution, pooling and normalization ops beyond the op table's one row each:
more geometries against the naive definitions on both machines and both tape
backends, the torch-style arguments and their errors, gradients of gradients,
the tie rule of max pooling, batch norm's running statistics, and PyTorch as a
second reference where it is installed."""
import tracemalloc

import numpy as np
import pytest

import exprvm as ev
from requires import needs
from exprvm.ops import conv as C
from exprvm.ops import pool as P

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def machines(g, outputs):
    """{name: values} for the LispMachine and the TapeMachine on each host backend."""
    out = {}
    lm = ev.LispMachine(g, outputs=outputs, replay=False)
    lm.run()
    out["lisp"] = [np.array(o.value) for o in outputs]
    for backend in ("numpy", "c"):
        if backend == "c" and ev.backends()["c"][0] is False:
            continue
        m = ev.TapeMachine(g, outputs=outputs, backend=backend)
        m.run()
        out[f"tape-{backend}"] = [np.array(o.value) for o in outputs]
    return out


CONV2D = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 8, 7), (4, 3, 3, 3), 1, 1, 1, 1),
    ((1, 4, 9, 9), (6, 2, 2, 3), (2, 3), (1, 0), (2, 1), 2),
    ((2, 2, 5, 6), (2, 1, 3, 2), 1, "same", (1, 2), 2),        # depthwise, even span
    ((1, 3, 6, 6), (5, 3, 6, 6), 1, "valid", 1, 1),            # kernel == input
    ((3, 1, 4, 4), (2, 1, 1, 1), 3, 2, 1, 1),                  # 1x1 kernel, big padding
]
# The output shapes, worked out by hand (padded size, window span, stride): no formula
# of the code under test, nor of the naive references, is used for them.
CONV2D_OUT = [
    (2, 4, 8, 7),       # 3x3, padding 1: the same size
    (1, 6, 5, 3),       # H: 9 + 2 = 11 padded, span 3 (dilation 2), stride 2 -> starts 0,2,4,6,8; W: 9, span 3, stride 3 -> 0,3,6
    (2, 2, 5, 6),       # "same"
    (1, 5, 1, 1),       # the kernel covers the input once
    (3, 2, 3, 3),       # 4 + 4 = 8 padded, span 1, stride 3 -> starts 0, 3, 6
]
POOL_OUT = [  # (x shape, kernel, stride, padding, output shape by hand)
    ((2, 3, 7, 6), (3, 2), (2, 2), (1, 1), (2, 3, 4, 4)),   # H: 9 padded, span 3 -> 0,2,4,6; W: 8, span 2 -> 0,2,4,6
    ((1, 2, 5, 5), (2, 2), (2, 2), (0, 0), (1, 2, 2, 2)),   # the last row and column fall off
    ((1, 1, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1, 4, 4)),
]


@pytest.mark.parametrize("case", range(len(CONV2D)))
def test_conv_output_shapes_against_a_table_written_by_hand(case):
    xs, ws, stride, padding, dilation, groups = CONV2D[case]
    x, w = np.ones(xs), np.ones(ws)
    y = ev.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert y.shape == CONV2D_OUT[case]
    g = ev.Graph()
    node = ev.conv2d(g.tensor("x", xs), g.tensor("w", ws), stride=stride, padding=padding, dilation=dilation,
                     groups=groups)
    assert node.shape == CONV2D_OUT[case]
    assert C.naive_conv(x, w, **node.params).shape == CONV2D_OUT[case]


@pytest.mark.parametrize("xs, k, s, p, want", POOL_OUT)
def test_pool_output_shapes_against_a_table_written_by_hand(xs, k, s, p, want):
    x = np.arange(np.prod(xs), dtype=np.float64).reshape(xs)
    assert ev.max_pool2d(x, k, s, p).shape == want and ev.avg_pool2d(x, k, s, p).shape == want
    assert P.naive_max_pool(x, k, s, p).shape == want and P.naive_avg_pool(x, k, s, p).shape == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CONV2D)))
def test_conv2d_geometries_on_every_machine(case, dtype, gemm_path):
    xs, ws, stride, padding, dilation, groups = CONV2D[case]
    rng = np.random.default_rng(case)
    g = ev.Graph()
    x = g.tensor("x", xs, dtype, value=rng.uniform(-1, 1, xs).astype(dtype))
    w = g.tensor("w", ws, dtype, value=rng.uniform(-1, 1, ws).astype(dtype))
    b = g.tensor("b", ws[:1], dtype, value=rng.uniform(-1, 1, ws[:1]).astype(dtype))
    y = ev.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    cost = ev.sum(ev.tanh(y))
    grads = ev.grad(cost, [x, w, b])
    p = y.inputs[0].params
    want = C.naive_conv(x.value, w.value, **p) + b.value.reshape(1, -1, 1, 1)
    if padding == "same":
        assert y.shape[2:] == xs[2:]
    for name, (yv, *gv) in machines(g, [y] + grads).items():
        np.testing.assert_allclose(yv, want, **TOL[dtype], err_msg=name)
        gy = 1 - np.tanh(want) ** 2
        np.testing.assert_allclose(gv[0], C.naive_conv_grad_input(gy, w.value, xs[2:], **p), **TOL[dtype])
        np.testing.assert_allclose(gv[1], C.naive_conv_grad_weight(x.value, gy, ws[2:], **p), **TOL[dtype])
        np.testing.assert_allclose(gv[2], gy.sum(axis=(0, 2, 3)), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d_on_every_machine(dtype, gemm_path):
    rng = np.random.default_rng(3)
    g = ev.Graph()
    x = g.tensor("x", (2, 4, 11), dtype, value=rng.uniform(-1, 1, (2, 4, 11)).astype(dtype))
    w = g.tensor("w", (6, 2, 4), dtype, value=rng.uniform(-1, 1, (6, 2, 4)).astype(dtype))
    y = ev.conv1d(x, w, stride=2, padding="valid", dilation=2, groups=2)
    gx, gw = ev.grad(ev.sum(y * y), [x, w])
    p = y.params
    for name, (yv, gxv, gwv) in machines(g, [y, gx, gw]).items():
        np.testing.assert_allclose(yv, C.naive_conv(x.value, w.value, **p), **TOL[dtype], err_msg=name)
        np.testing.assert_allclose(gxv, C.naive_conv_grad_input(2 * yv, w.value, (11,), **p), **TOL[dtype])
        np.testing.assert_allclose(gwv, C.naive_conv_grad_weight(x.value, 2 * yv, (4,), **p), **TOL[dtype])


def test_the_tape_runs_the_kernels_and_allocates_nothing():
    g = ev.Graph()
    x = g.tensor("x", (2, 3, 8, 8), np.float32, value=np.ones((2, 3, 8, 8), np.float32))
    w = g.tensor("w", (4, 3, 3, 3), np.float32, value=np.ones((4, 3, 3, 3), np.float32))
    y = ev.avg_pool2d(ev.max_pool2d(ev.relu(ev.conv2d(x, w, padding=1)), 2), 2, 1, 1)
    ev.grad(ev.sum(y * y), [x, w])
    text = str(ev.TapeMachine(g).program)
    for op in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d", "max_pool2d_grad",
               "avg_pool2d", "avg_pool2d_grad"):
        assert f"= {op}[c] " in text, op
    for backend in ("numpy", "c"):
        prog = ev.TapeMachine(g, backend=backend).program
        numpy_impl = {"max_pool2d_grad", "avg_pool2d_grad"} if backend == "numpy" else set()
        assert [i.op for i in prog if i.allocates and i.op not in numpy_impl] == [], backend


def test_a_compiled_convnet_step_allocates_no_arrays():
    rng = np.random.default_rng(0)
    g = ev.Graph()
    x = g.tensor("x", (8, 16, 16, 16), np.float32)      # 128 kB: any temporary array would show
    w = g.tensor("w", (32, 8, 3, 3), np.float32, value=rng.standard_normal((32, 8, 3, 3)).astype(np.float32))
    y = ev.avg_pool2d(ev.max_pool2d(ev.relu(ev.conv2d(x, w, padding=1, groups=2)), 2), 2, 1, 1)
    y = ev.batch_norm(y, None, None, training=True)
    ev.grad(ev.sum(y * y), [x, w])
    m = ev.TapeMachine(g, backend="c", fuse="sync")     # its final program throughout
    assert not any(i.allocates for i in m.program)
    feeds = {x: rng.standard_normal((8, 16, 16, 16)).astype(np.float32)}
    m.run(feeds)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            m.run(feeds)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # NOTE: numpy's broadcasting ufuncs take an 8192-element iterator buffer per call
    assert peak - base < 8192 * 4 + 4096, peak - base


def test_second_order_gradients_through_the_gradient_ops():
    rng = np.random.default_rng(0)
    x0, w0 = rng.uniform(-1, 1, (1, 2, 5, 4)), rng.uniform(-1, 1, (3, 2, 2, 3))

    def conv_fn(x, w):
        gx, gw = ev.grad(ev.sum(ev.tanh(ev.conv2d(x, w, stride=(2, 1), padding=1))), [x, w])
        return ev.sum(gx * gx) + ev.sum(ev.sin(gw))
    assert ev.check_grad(conv_fn, [x0, w0])

    def pool_fn(x):
        gx = ev.grad(ev.sum(ev.square(ev.max_pool2d(x, 2, 1))) + ev.sum(ev.square(ev.avg_pool2d(x, 3, 2, 1))), x)
        return ev.sum(gx * ev.tanh(x))
    assert ev.check_grad(pool_fn, [x0])

    def norm_fn(x):
        y = ev.batch_norm(x, None, None, training=True) + ev.layer_norm(x, (5, 4))
        return ev.sum(ev.square(ev.grad(ev.sum(y * ev.sin(x)), x)))
    assert ev.check_grad(norm_fn, [x0 + rng.uniform(-1, 1, (1, 2, 5, 4))])


@pytest.mark.parametrize("stride", [1, 2])
def test_float32_conv_gradients_on_the_tape_against_finite_differences(stride, gemm_path):
    """The C backend's float32 runners (both product paths) differentiate a cost whose
    central differences are taken in float64 on the naive definition."""
    if ev.backends()["c"][0] is False:
        pytest.skip("no C backend")
    rng = np.random.default_rng(stride)
    x0, w0 = rng.uniform(-1, 1, (2, 4, 7, 6)), rng.uniform(-1, 1, (6, 2, 3, 3))
    p = dict(stride=(stride, stride), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=2)

    def cost(x, w):
        return float(np.sum(np.tanh(C.naive_conv(x, w, **p)) * np.cos(np.arange(6)).reshape(1, 6, 1, 1)))
    g = ev.Graph()
    x = g.tensor("x", x0.shape, np.float32, value=x0.astype(np.float32))
    w = g.tensor("w", w0.shape, np.float32, value=w0.astype(np.float32))
    y = ev.conv2d(x, w, stride=stride, padding=1, groups=2)
    gx, gw = ev.grad(ev.sum(ev.tanh(y) * g.constant(np.cos(np.arange(6)).reshape(1, 6, 1, 1).astype(np.float32))),
                     [x, w])
    m = ev.TapeMachine(g, outputs=[gx, gw], backend="c")
    assert any(i.op.startswith("conv2d") and i.kernel == "c" for i in m.program)
    m.run()
    eps = 1e-6
    for arr, got in ((x0, gx.value), (w0, gw.value)):
        for idx in [tuple(rng.integers(0, s) for s in arr.shape) for _ in range(12)]:
            hi, lo = arr.copy(), arr.copy()
            hi[idx] += eps
            lo[idx] -= eps
            args = (hi, w0) if arr is x0 else (x0, hi)
            args_lo = (lo, w0) if arr is x0 else (x0, lo)
            fd = (cost(*args) - cost(*args_lo)) / (2 * eps)
            assert abs(got[idx] - fd) <= 2e-4 * max(1.0, abs(fd)), (idx, got[idx], fd)


def test_conv_gradient_with_bias_and_groups_by_finite_differences():
    rng = np.random.default_rng(1)
    arrays = [rng.uniform(-1, 1, s) for s in ((2, 4, 5, 5), (4, 2, 3, 3), (4,))]
    assert ev.check_grad(lambda x, w, b: ev.sum(ev.tanh(ev.conv2d(x, w, b, padding="same", groups=2))), arrays)


# -- arguments and errors ---------------------------------------------------------------

def _graph(*shapes):
    g = ev.Graph()
    return [g.tensor(f"t{i}", s, np.float32) for i, s in enumerate(shapes)]


@pytest.mark.parametrize("call, match", [
    (lambda x, w: ev.conv2d(x, ev.reshape(w, (4, 3, 1, 3, 3))), "weight must be 4-d"),
    (lambda x, w: ev.conv2d(x, w, padding=-1), "padding must be >= 0"),
    (lambda x, w: ev.conv2d(x, w, padding="full"), "'same' or 'valid'"),
    (lambda x, w: ev.conv2d(x, w, stride=2, padding="same"), "needs stride 1"),
    (lambda x, w: ev.conv2d(x, w, stride=(1, 2, 3)), "stride must be an int or 2 ints"),
    (lambda x, w: ev.conv2d(x, w, groups=0), "groups must be a positive int"),
    (lambda x, w: ev.conv2d(x, w, groups=2), "not divisible by groups=2"),
    (lambda x, w: ev.conv2d(x, w, dilation=4), r"larger than the padded input 6"),
    (lambda x, w: ev.conv2d(x[:, :2], w), "the input has 2"),
    (lambda x, w: ev.conv2d(x, w, bias=w[0, 0, 0]), r"bias must have shape \(4,\)"),
    (lambda x, w: ev.conv1d(x, w), "weight must be 3-d"),
    (lambda x, w: ev.max_pool2d(x, 2, padding=2), "at most half the kernel"),
    (lambda x, w: ev.max_pool2d(x, 7), "larger than the padded input 6"),
    (lambda x, w: ev.avg_pool2d(w[0], 2), r"must be 4-d \(NCHW\)"),
    (lambda x, w: ev.global_avg_pool2d(w[0]), "must be 4-d"),
    (lambda x, w: ev.layer_norm(x, (5, 6)), "trailing dims"),
    (lambda x, w: ev.batch_norm(x, None, None), "needs running_mean"),
    (lambda x, w: ev.batch_norm(x, w[0, 0], None, training=True), r"running_mean must have shape \(3,\)"),
])
def test_bad_arguments_raise_shape_errors_at_build_time(call, match):
    x, w = _graph((2, 3, 6, 6), (4, 3, 3, 3))
    with pytest.raises(ev.ShapeError, match=match) as info:
        call(x, w)
    assert "test_conv.py:" in str(info.value)       # the user's line


def test_shape_errors_name_the_op_and_the_operands():
    x, w = _graph((2, 3, 6, 6), (4, 3, 7, 3))
    with pytest.raises(ev.ShapeError) as info:
        ev.conv2d(x, w)
    msg = str(info.value)
    assert msg.startswith("conv2d: kernel 7") and "(2, 3, 6, 6)" in msg and "(4, 3, 7, 3)" in msg
    assert "test_conv.py:" in msg
    x, w = _graph((2, 3, 6, 6), (4, 3, 3, 3))
    with pytest.raises(ev.DTypeError):
        ev.conv2d(x, ev.astype(w, np.float64))


def test_eager_arrays_evaluate_like_torch_functions():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    assert ev.max_pool2d(x, 2).ravel().tolist() == [5, 7, 13, 15]
    assert ev.avg_pool2d(x, 2, padding=1)[0, 0, 0, 0] == pytest.approx(0 / 4)
    assert ev.avg_pool2d(x, 2, padding=1)[0, 0, 2, 2] == pytest.approx(15 / 4)    # zeros counted
    assert ev.global_avg_pool2d(x).shape == (1, 1, 1, 1)
    assert ev.conv2d(x, np.ones((1, 1, 2, 2))).ravel()[0] == 0 + 1 + 4 + 5


def test_max_pool_gradient_goes_to_one_winner_on_every_machine():
    g = ev.Graph()
    v = np.array([[[[1.0, 1.0, 0.0], [1.0, 1.0, 2.0], [0.0, 3.0, 3.0]]]])
    x = g.tensor("x", v.shape, value=v)
    gx = ev.grad(ev.sum(ev.max_pool2d(x, 2, 1)), x)    # overlapping windows share winners
    want = np.array([[[[1.0, 0, 0], [0, 0, 1], [0, 2, 0]]]])
    for name, (got,) in machines(g, [gx]).items():
        np.testing.assert_array_equal(got, want, err_msg=name)


# -- normalization -----------------------------------------------------------------------

def test_batch_norm_training_and_evaluation_against_numpy():
    rng = np.random.default_rng(2)
    xv = rng.normal(3.0, 2.0, (8, 3, 4, 5))
    w, b = rng.uniform(0.5, 1.5, 3), rng.uniform(-1, 1, 3)
    rm, rv = rng.uniform(-1, 1, 3), rng.uniform(0.5, 2, 3)
    g = ev.Graph()
    x = g.tensor("x", xv.shape, value=xv)
    yt = ev.batch_norm(x, rm, rv, w, b, training=True)
    ye = ev.batch_norm(x, rm, rv, w, b, training=False, eps=1e-3)
    c = (1, 3, 1, 1)
    mu, var = xv.mean(axis=(0, 2, 3)).reshape(c), xv.var(axis=(0, 2, 3)).reshape(c)
    want_t = (xv - mu) / np.sqrt(var + 1e-5) * w.reshape(c) + b.reshape(c)
    want_e = (xv - rm.reshape(c)) / np.sqrt(rv.reshape(c) + 1e-3) * w.reshape(c) + b.reshape(c)
    for name, (t, e) in machines(g, [yt, ye]).items():
        np.testing.assert_allclose(t, want_t, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(e, want_e, rtol=1e-10, err_msg=name)


def test_batch_norm_update_follows_the_running_average_rule_over_steps():
    rng = np.random.default_rng(4)
    rm, rv = np.zeros(3), np.ones(3)
    want_m, want_v = rm.copy(), rv.copy()
    for step in range(5):
        xv = rng.normal(step, 1 + step, (6, 3, 2, 2))
        g = ev.Graph()
        x = g.tensor("x", xv.shape, value=xv)
        m_node, v_node = g.tensor("rm", (3,), value=rm.copy()), g.tensor("rv", (3,), value=rv.copy())
        new_m, new_v = ev.batch_norm_update(x, m_node, v_node, momentum=0.2)
        got = machines(g, [new_m, new_v])
        n = xv.size // 3
        want_m = 0.8 * want_m + 0.2 * xv.mean(axis=(0, 2, 3))
        want_v = 0.8 * want_v + 0.2 * xv.var(axis=(0, 2, 3)) * n / (n - 1)
        for name, (m, v) in got.items():
            np.testing.assert_allclose(m, want_m, rtol=1e-12, err_msg=name)
            np.testing.assert_allclose(v, want_v, rtol=1e-12, err_msg=name)
        rm, rv = got["lisp"]


def test_layer_norm_against_numpy():
    rng = np.random.default_rng(5)
    xv, w, b = rng.normal(1, 3, (4, 5, 6)), rng.uniform(0.5, 1.5, (5, 6)), rng.uniform(-1, 1, (5, 6))
    g = ev.Graph()
    x = g.tensor("x", xv.shape, value=xv)
    y = ev.layer_norm(x, (5, 6), w, b, eps=1e-4)
    mu, var = xv.mean(axis=(1, 2), keepdims=True), xv.var(axis=(1, 2), keepdims=True)
    for name, (got,) in machines(g, [y]).items():
        np.testing.assert_allclose(got, (xv - mu) / np.sqrt(var + 1e-4) * w + b, rtol=1e-10, err_msg=name)
    assert ev.check_grad(lambda x, w, b: ev.sum(ev.sin(ev.layer_norm(x, 6, w, b))),
                         [xv[:2, :2], w[0], b[0]])
    assert ev.check_grad(lambda x, w, b: ev.sum(ev.sin(ev.batch_norm(x, None, None, w, b, training=True))),
                         [xv[:3].transpose(0, 2, 1)[:, :3], w[0, :3], b[0, :3]])


# -- PyTorch as a second reference -------------------------------------------------------

try:
    import torch
    import torch.nn.functional as F
except ImportError:      # optional: the numpy references above are the truth
    torch = None

needs_torch = needs(torch is not None, "PyTorch is not installed (the test extra pins torch==2.13.0)")


def _t(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@needs_torch
@pytest.mark.parametrize("case", range(len(CONV2D)))
def test_conv2d_matches_torch(case):
    xs, ws, stride, padding, dilation, groups = CONV2D[case]
    rng = np.random.default_rng(10 + case)
    xv, wv, bv = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[:1])
    xt, wt, bt = _t(xv), _t(wv), _t(bv)
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation, groups=groups)
    (yt.sin().sum()).backward()
    g = ev.Graph()
    x, w, b = (g.tensor(n, a.shape, value=a) for n, a in (("x", xv), ("w", wv), ("b", bv)))
    y = ev.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grads = ev.grad(ev.sum(ev.sin(y)), [x, w, b])
    ev.TapeMachine(g, outputs=[y] + grads).run()
    np.testing.assert_allclose(y.value, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, t in zip(grads, (xt, wt, bt)):
        np.testing.assert_allclose(got.value, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@needs_torch
def test_conv1d_and_pooling_match_torch():
    rng = np.random.default_rng(20)
    xv, wv = rng.standard_normal((2, 4, 13)), rng.standard_normal((6, 2, 3))
    want = F.conv1d(_t(xv), _t(wv), stride=2, padding=2, dilation=3, groups=2).detach().numpy()
    np.testing.assert_allclose(ev.conv1d(xv, wv, stride=2, padding=2, dilation=3, groups=2), want, rtol=1e-10)
    xv = rng.standard_normal((2, 3, 9, 8))
    for fn, tfn in ((ev.max_pool2d, F.max_pool2d), (ev.avg_pool2d, F.avg_pool2d)):
        for k, s, p in ((2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))):
            xt = _t(xv)
            yt = tfn(xt, k, s, p)
            (yt * yt).sum().backward()
            g = ev.Graph()
            x = g.tensor("x", xv.shape, value=xv)
            y = fn(x, k, s, p)
            gx = ev.grad(ev.sum(y * y), x)
            ev.TapeMachine(g, outputs=[y, gx]).run()
            np.testing.assert_allclose(y.value, yt.detach().numpy(), rtol=1e-12, err_msg=fn.__name__)
            np.testing.assert_allclose(gx.value, xt.grad.numpy(), rtol=1e-12, err_msg=fn.__name__)


@needs_torch
def test_batch_norm_and_its_running_statistics_match_torch():
    rng = np.random.default_rng(21)
    bn = torch.nn.BatchNorm2d(3, momentum=0.3, dtype=torch.float64)
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(3):
        xv = rng.normal(2, 3, (5, 3, 4, 4))
        yt = bn(torch.tensor(xv))
        y = ev.batch_norm(xv, rm, rv, bn.weight.detach().numpy(), bn.bias.detach().numpy(), training=True)
        rm, rv = ev.batch_norm_update(xv, rm, rv, momentum=0.3)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-12)
    bn.eval()
    np.testing.assert_allclose(ev.batch_norm(xv, rm, rv, bn.weight.detach().numpy(), bn.bias.detach().numpy()),
                               bn(torch.tensor(xv)).detach().numpy(), rtol=1e-10, atol=1e-12)
    ln = F.layer_norm(torch.tensor(xv), (4, 4), eps=1e-5).numpy()
    np.testing.assert_allclose(ev.layer_norm(xv, (4, 4)), ln, rtol=1e-10, atol=1e-12)
