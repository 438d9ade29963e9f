"""Every entry point of the CUDA library (csrc/ev_cuda.h) called on the host twin, with
host arrays for device memory, against numpy: the unary kernels and their gradients,
the binary, broadcast, strided, row, index and solver kernels, and the runtime's own
calls. Each check records which entry points it called (a proxy around the library);
test_every_declared_entry_point_has_a_check fails when ev_cuda.h declares one that no
check calls. The twin shuffles every launch's index order (seeded), and the same
checks run again on the sanitized and the FMA builds (test_cuda_twin_builds.py)."""
import math
import pathlib
import re

import numpy as np
import pytest

from exprvm import kernels
from exprvm.kernels import reference
from cuda_twin import twin  # noqa: F401  (fixture)

HEADER = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "ev_cuda.h"
SFX = {np.float32: "f32", np.float64: "f64"}
CT = {np.float32: "float", np.float64: "double", np.int64: "int64_t", np.int32: "int32_t",
      np.uint8: "uint8_t"}
CHECKS = {}


def declared():
    return set(re.findall(r"\b(ev_cuda_\w+)\s*\(", HEADER.read_text()))


def check(*symbols):
    def register(fn):
        CHECKS[fn.__name__] = (fn, set(symbols))
        return fn
    return register


class Recorder:
    """The twin's library, noting every ev_cuda_* function called through it."""

    def __init__(self, lib):
        self.lib, self.called = lib, set()

    def __getattr__(self, name):
        fn = getattr(self.lib, name)
        if not name.startswith("ev_cuda_"):
            return fn

        def call(*args):
            self.called.add(name)
            return fn(*args)
        return call


def ptr(ffi, a):
    a = np.asarray(a)
    assert a.flags.c_contiguous or a.ndim == 0
    return ffi.cast(CT[a.dtype.type] + "*", a.ctypes.data)


def i64(ffi, values):
    return ffi.new("int64_t[]", [int(v) for v in values] or [0])


def ok(rc):
    assert rc == 0, f"error {rc}"


def close(got, want, dtype, ulps=8, slack=0.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    tol = ulps * np.finfo(dtype).eps * np.abs(want[fin]) + 4 * np.finfo(dtype).tiny + \
        (slack[fin] if np.ndim(slack) else slack)
    bad = np.abs(got[fin] - want[fin]) > tol
    assert not bad.any(), f"{bad.sum()} elements off, e.g. {got[fin][bad][:3]} vs {want[fin][bad][:3]}"


def sample(dtype, n=997):
    rng = np.random.default_rng(7)
    special = [0.0, -0.0, 1e-30, 30.0, -30.0, 100.0, -100.0, np.inf, -np.inf, np.nan, -1.0, 0.5]
    with np.errstate(over="ignore"):
        return np.concatenate([rng.standard_normal(n) * 3, special]).astype(dtype)


# -- unary kernels and their gradients, binary kernels -----------------------------------

def _unary(dtype):
    def run(lib, ffi):
        x = sample(dtype)
        g = np.random.default_rng(8).standard_normal(x.shape).astype(dtype)
        for op in kernels.KERNEL_OPS:
            with np.errstate(all="ignore"):
                ans = reference.FORWARD[op](x, None)
                want = reference.GRAD[op](x, ans, g, None)
            out = np.full_like(x, np.nan)
            ok(getattr(lib, f"ev_cuda_{op}_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, out), x.size))
            close(out, ans, dtype)
            out = np.full_like(x, np.nan)
            ok(getattr(lib, f"ev_cuda_{op}_grad_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, ans), ptr(ffi, g), ptr(ffi, out),
                                                               x.size))
            slack = np.finfo(dtype).eps * np.abs(g.astype(np.float64)) if op == "tanh" else 0.0
            close(out, want, dtype, slack=slack)
    return run


for _dt in (np.float32, np.float64):
    _name = f"unary_{SFX[_dt]}"
    _fn = _unary(_dt)
    _fn.__name__ = _name
    check(*[f"ev_cuda_{op}{k}_{SFX[_dt]}" for op in kernels.KERNEL_OPS for k in ("", "_grad")])(_fn)


@check(*[f"ev_cuda_{op}_{s}" for op in ("add", "sub", "mul", "div", "neg") for s in ("f32", "f64")])
def binary(lib, ffi):
    for dtype in (np.float32, np.float64):
        a = sample(dtype)
        b = np.random.default_rng(9).uniform(-3, 3, a.shape).astype(dtype)
        b[::17] = 0.0
        with np.errstate(all="ignore"):
            for op, want in (("add", a + b), ("sub", a - b), ("mul", a * b), ("div", a / b)):
                out = np.full_like(a, 7.0)
                ok(getattr(lib, f"ev_cuda_{op}_{SFX[dtype]}")(ptr(ffi, a), ptr(ffi, b), ptr(ffi, out), a.size))
                np.testing.assert_array_equal(out, want, err_msg=op)
        out = np.full_like(a, 7.0)
        ok(getattr(lib, f"ev_cuda_neg_{SFX[dtype]}")(ptr(ffi, a), ptr(ffi, out), a.size))
        np.testing.assert_array_equal(out, -a)


# -- strided kernels ---------------------------------------------------------------------

def strides(a, shape):
    """a's element strides as an operand broadcast to shape (0 where broadcast)."""
    a = np.broadcast_to(a, shape)
    return [s // a.itemsize for s in a.strides]


@check(*[f"ev_cuda_bcast_{op}_{s}" for op in ("add", "sub", "mul", "div", "maximum", "minimum")
         for s in ("f32", "f64")])
def broadcast_binary(lib, ffi):
    rng = np.random.default_rng(10)
    shape = (3, 5, 4)
    for dtype in (np.float32, np.float64):
        a = rng.uniform(-2, 2, (3, 1, 4)).astype(dtype)
        b = rng.uniform(0.5, 2, (1, 5, 4)).astype(dtype)
        b[0, 1, 2] = np.nan
        refs = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                "maximum": np.maximum, "minimum": np.minimum}
        for op, f in refs.items():
            out = np.full(shape, 7.0, dtype)
            ok(getattr(lib, f"ev_cuda_bcast_{op}_{SFX[dtype]}")(
                ptr(ffi, a), ptr(ffi, b), ptr(ffi, out), 3, i64(ffi, shape), i64(ffi, strides(a, shape)),
                i64(ffi, strides(b, shape)), out.size))
            np.testing.assert_array_equal(out, f(a, b), err_msg=op)


@check("ev_cuda_where_f32", "ev_cuda_where_f64", "ev_cuda_copy_strided_f32", "ev_cuda_copy_strided_f64",
       "ev_cuda_fill_f32", "ev_cuda_fill_f64")
def where_copy_fill(lib, ffi):
    rng = np.random.default_rng(11)
    shape = (4, 6)
    for dtype in (np.float32, np.float64):
        c = rng.random((4, 1)) < 0.5
        cu = c.astype(np.uint8)
        x, y = rng.standard_normal(shape).astype(dtype), rng.standard_normal((1, 6)).astype(dtype)
        out = np.full(shape, 7.0, dtype)
        ok(getattr(lib, f"ev_cuda_where_{SFX[dtype]}")(
            ptr(ffi, cu), ptr(ffi, x), ptr(ffi, y), ptr(ffi, out), 2, i64(ffi, shape),
            i64(ffi, strides(cu, shape)), i64(ffi, strides(x, shape)), i64(ffi, strides(y, shape)), out.size))
        np.testing.assert_array_equal(out, np.where(c, x, y))
        base = rng.standard_normal((6, 4)).astype(dtype)
        view = base.T                                       # (4, 6), strides (1, 4)
        out = np.full(shape, 7.0, dtype)
        ok(getattr(lib, f"ev_cuda_copy_strided_{SFX[dtype]}")(
            ptr(ffi, base), ptr(ffi, out), 2, i64(ffi, shape), i64(ffi, [1, 4]), i64(ffi, [6, 1]), out.size))
        np.testing.assert_array_equal(out, view)
        value = np.array(2.5, dtype)
        out = np.full(37, 7.0, dtype)
        ok(getattr(lib, f"ev_cuda_fill_{SFX[dtype]}")(ptr(ffi, out), ptr(ffi, value), out.size))
        assert (out == 2.5).all()


@check("ev_cuda_concat_f32", "ev_cuda_concat_f64")
def concat(lib, ffi):
    rng = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        pieces = [rng.standard_normal((3, k, 2)).astype(dtype) for k in (2, 1, 3)]
        out = np.full((3, 8, 2), 7.0, dtype)
        srcs = ffi.new(f"{CT[dtype]}*[]", [ptr(ffi, p) for p in pieces])
        ok(getattr(lib, f"ev_cuda_concat_{SFX[dtype]}")(3, srcs, i64(ffi, [2, 1, 3]), ptr(ffi, out), 3, 8, 2, 1))
        want = np.full((3, 8, 2), 7.0, dtype)
        want[:, 1:7] = np.concatenate(pieces, axis=1)
        np.testing.assert_array_equal(out, want)


# -- rows: reductions, softmax, cross-entropy ----------------------------------------------

@check("ev_cuda_reduce_sum_f32", "ev_cuda_reduce_sum_f64", "ev_cuda_reduce_max_f32", "ev_cuda_reduce_max_f64")
def reductions(lib, ffi):
    rng = np.random.default_rng(13)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 50, 4)).astype(dtype)
        for parts in (1, 4):
            partial = np.full((3, parts, 4), np.nan, dtype)
            out = np.full((3, 4), 7.0, dtype)
            ok(getattr(lib, f"ev_cuda_reduce_sum_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, out), ptr(ffi, partial),
                                                                 3, 50, 4, parts, 0.5))
            close(out, 0.5 * x.astype(np.float64).sum(axis=1), dtype, ulps=64)
            out = np.full((3, 4), 7.0, dtype)
            ok(getattr(lib, f"ev_cuda_reduce_max_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, out), ptr(ffi, partial),
                                                                 3, 50, 4, parts))
            np.testing.assert_array_equal(out, x.max(axis=1))


def _softmax64(x, axis):
    out = np.empty_like(x, dtype=np.float64)
    for idx in np.ndindex(*[s for i, s in enumerate(x.shape) if i != axis]):
        sl = list(idx)
        sl.insert(axis, slice(None))
        row = [float(v) for v in x[tuple(sl)]]
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        total = math.fsum(exps)
        out[tuple(sl)] = [e / total for e in exps]
    return out


@check("ev_cuda_softmax_f32", "ev_cuda_softmax_f64", "ev_cuda_log_softmax_f32", "ev_cuda_log_softmax_f64")
def softmaxes(lib, ffi):
    rng = np.random.default_rng(14)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((2, 7, 3)) * 5).astype(dtype)
        want = _softmax64(x, 1)
        out = np.full_like(x, np.nan)
        ok(getattr(lib, f"ev_cuda_softmax_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, out), 2, 7, 3))
        close(out, want, dtype, ulps=16)
        out = np.full_like(x, np.nan)
        ok(getattr(lib, f"ev_cuda_log_softmax_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, out), 2, 7, 3))
        close(out, np.log(want), dtype, ulps=16, slack=16 * np.finfo(dtype).eps * np.abs(x).max())


@check(*[f"ev_cuda_{op}{i}_{s}" for op in ("cross_entropy", "xent_grad") for i in ("", "_i32")
         for s in ("f32", "f64")])
def cross_entropy(lib, ffi):
    rng = np.random.default_rng(15)
    for dtype in (np.float32, np.float64):
        z = (rng.standard_normal((6, 5)) * 3).astype(dtype)
        for itype, tag in ((np.int64, ""), (np.int32, "_i32")):
            t = np.array([0, 4, 2, 2, 1, 3], itype)
            p = _softmax64(z, 1)
            loss = -np.log(p[np.arange(6), t])
            onehot = np.zeros((6, 5))
            onehot[np.arange(6), t] = 1.0
            out = np.full(6, np.nan, dtype)
            ok(getattr(lib, f"ev_cuda_cross_entropy{tag}_{SFX[dtype]}")(ptr(ffi, z), ptr(ffi, t), ptr(ffi, out), 6, 5))
            close(out, loss, dtype, ulps=32, slack=16 * np.finfo(dtype).eps * 3 * np.abs(z).max())
            out = np.full((6, 5), np.nan, dtype)
            ok(getattr(lib, f"ev_cuda_xent_grad{tag}_{SFX[dtype]}")(ptr(ffi, z), ptr(ffi, t), ptr(ffi, out), 6, 5))
            close(out, p - onehot, dtype, ulps=16, slack=4 * np.finfo(dtype).eps)


# -- indices ---------------------------------------------------------------------------

@check(*[f"ev_cuda_{op}{i}_{s}" for op in ("take", "take_grad") for i in ("", "_i32") for s in ("f32", "f64")]
       + [f"ev_cuda_one_hot{i}_{s}" for i in ("", "_i32") for s in ("f32", "f64")])
def indices(lib, ffi):
    rng = np.random.default_rng(16)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 5, 3)).astype(dtype)
        for itype, tag in ((np.int64, ""), (np.int32, "_i32")):
            idx = np.array([4, 0, 4, 2], itype)
            out = np.full((2, 4, 3), np.nan, dtype)
            ok(getattr(lib, f"ev_cuda_take{tag}_{SFX[dtype]}")(ptr(ffi, x), ptr(ffi, idx), ptr(ffi, out), 2, 5, 3, 4))
            np.testing.assert_array_equal(out, x[:, idx])
            g = rng.standard_normal((2, 4, 3)).astype(dtype)
            out = np.full((2, 5, 3), np.nan, dtype)
            ok(getattr(lib, f"ev_cuda_take_grad{tag}_{SFX[dtype]}")(ptr(ffi, g), ptr(ffi, idx), ptr(ffi, out),
                                                                    2, 5, 3, 4))
            want = np.zeros((2, 5, 3))
            for k, i in enumerate(idx):         # repeated ids add up
                want[:, i] += g[:, k]
            close(out, want, dtype, ulps=4)
            t = np.array([3, 0, 1], itype)
            out = np.full((3, 4), 7.0, dtype)
            ok(getattr(lib, f"ev_cuda_one_hot{tag}_{SFX[dtype]}")(ptr(ffi, t), ptr(ffi, out), 3, 4))
            np.testing.assert_array_equal(out, np.eye(4, dtype=dtype)[[3, 0, 1]])


# -- solver updates ------------------------------------------------------------------------

def _prepared(g, w, clip, l1, l2, scale):
    g = np.clip(g, -clip, clip) if clip > 0 else g
    g = g * scale
    return g + l1 * np.sign(w) + l2 * w


@check("ev_cuda_sgd_f32", "ev_cuda_sgd_f64", "ev_cuda_momentum_f32", "ev_cuda_momentum_f64",
       "ev_cuda_adam_f32", "ev_cuda_adam_f64", "ev_cuda_sumsq_f32", "ev_cuda_sumsq_f64", "ev_cuda_clip_scale")
def solvers(lib, ffi):
    rng = np.random.default_rng(17)
    for dtype in (np.float32, np.float64):
        s = SFX[dtype]
        w0 = rng.standard_normal(101).astype(dtype)
        g = (rng.standard_normal(101) * 2).astype(dtype)
        w64, g64 = w0.astype(np.float64), g.astype(np.float64)
        # the global-norm scale: sum of squares of the clipped gradient, then min(1, max / norm)
        acc = np.zeros(1)
        ok(getattr(lib, f"ev_cuda_sumsq_{s}")(ptr(ffi, g), dtype(1.5), ptr(ffi, acc), g.size, 8))
        sq = float(np.sum(np.clip(g64, -1.5, 1.5) ** 2))
        assert acc[0] == pytest.approx(sq, rel=1e-12)
        ok(lib.ev_cuda_clip_scale(ptr(ffi, acc), 2.0))
        scale = min(1.0, 2.0 / math.sqrt(sq))
        assert acc[0] == pytest.approx(scale, rel=1e-12)
        prep = _prepared(g64, w64, 1.5, 0.01, 0.1, scale)
        tol = dict(rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-14)
        w = w0.copy()
        ok(getattr(lib, f"ev_cuda_sgd_{s}")(ptr(ffi, w), ptr(ffi, g), w.size, dtype(0.1), dtype(1.5), dtype(0.01),
                                             dtype(0.1), ptr(ffi, acc)))
        np.testing.assert_allclose(w, w64 - 0.1 * prep, **tol)
        for nesterov in (0, 1):
            w, vel = w0.copy(), np.full_like(w0, 0.25)
            ok(getattr(lib, f"ev_cuda_momentum_{s}")(ptr(ffi, w), ptr(ffi, vel), ptr(ffi, g), w.size, dtype(0.1),
                                                      dtype(0.9), nesterov, dtype(1.5), dtype(0.01), dtype(0.1),
                                                      ptr(ffi, acc)))
            v = 0.25 * 0.9 - 0.1 * prep
            np.testing.assert_allclose(vel, v, **tol)
            np.testing.assert_allclose(w, w64 + (v * 0.9 - 0.1 * prep if nesterov else v), **tol)
        w, m, v = w0.copy(), np.full_like(w0, 0.1), np.full_like(w0, 0.2)
        b1, b2, t, lr, eps, decay = 0.9, 0.999, 3, 0.01, 1e-8, 0.99
        ok(getattr(lib, f"ev_cuda_adam_{s}")(
            ptr(ffi, w), ptr(ffi, m), ptr(ffi, v), ptr(ffi, g), w.size, dtype(lr / (1 - b1 ** t)), dtype(b1),
            dtype(1 - b1), dtype(b2), dtype(1 - b2), dtype(1 / math.sqrt(1 - b2 ** t)), dtype(eps), dtype(decay),
            dtype(1.5), dtype(0.01), dtype(0.1), ffi.NULL))
        prep = _prepared(g64, w64, 1.5, 0.01, 0.1, 1.0)
        m_want, v_want = 0.9 * 0.1 + 0.1 * prep, 0.999 * 0.2 + 0.001 * prep ** 2
        np.testing.assert_allclose(m, m_want, **tol)
        np.testing.assert_allclose(v, v_want, **tol)
        m_hat, v_hat = m_want / (1 - b1 ** t), v_want / (1 - b2 ** t)
        np.testing.assert_allclose(w, w64 * decay - lr * m_hat / (np.sqrt(v_hat) + eps), **tol)


# -- the runtime's own entry points ----------------------------------------------------------

@check("ev_cuda_error_string", "ev_cuda_device_count", "ev_cuda_set_device", "ev_cuda_get_device",
       "ev_cuda_device_info", "ev_cuda_mem_info", "ev_cuda_malloc", "ev_cuda_free", "ev_cuda_memcpy_htod",
       "ev_cuda_memcpy_dtoh", "ev_cuda_memcpy_dtod", "ev_cuda_memset", "ev_cuda_synchronize", "ev_cuda_status",
       "ev_cuda_is_twin")
def runtime(lib, ffi):
    assert lib.ev_cuda_is_twin() == 1
    count, dev = ffi.new("int*"), ffi.new("int*", -1)
    ok(lib.ev_cuda_device_count(count))
    assert count[0] == 1
    ok(lib.ev_cuda_set_device(0))
    assert lib.ev_cuda_set_device(1) != 0
    ok(lib.ev_cuda_get_device(dev))
    assert dev[0] == 0
    name, total, major, minor = ffi.new("char[64]"), ffi.new("size_t*"), ffi.new("int*"), ffi.new("int*")
    ok(lib.ev_cuda_device_info(0, name, 64, total, major, minor))
    assert b"twin" in ffi.string(name) and total[0] > 0
    assert ffi.string(lib.ev_cuda_error_string(10001)).startswith(b"exprvm: too many dimensions")
    free_before, tot = ffi.new("size_t*"), ffi.new("size_t*")
    ok(lib.ev_cuda_mem_info(free_before, tot))
    p, q = ffi.new("void**"), ffi.new("void**")
    ok(lib.ev_cuda_malloc(p, 64))
    ok(lib.ev_cuda_malloc(q, 64))
    free_now = ffi.new("size_t*")
    ok(lib.ev_cuda_mem_info(free_now, tot))
    assert free_before[0] - free_now[0] == 128
    src = np.arange(16, dtype=np.float32)
    ok(lib.ev_cuda_memcpy_htod(p[0], ptr(ffi, src), 64))
    ok(lib.ev_cuda_memcpy_dtod(q[0], p[0], 64))
    ok(lib.ev_cuda_memset(p[0], 0, 32))
    back, back2 = np.full(16, 7.0, np.float32), np.full(16, 7.0, np.float32)
    ok(lib.ev_cuda_memcpy_dtoh(ptr(ffi, back), p[0], 64))
    ok(lib.ev_cuda_memcpy_dtoh(ptr(ffi, back2), q[0], 64))
    ok(lib.ev_cuda_synchronize())
    np.testing.assert_array_equal(back, np.r_[np.zeros(8), np.arange(8, 16)])
    np.testing.assert_array_equal(back2, src)
    ok(lib.ev_cuda_free(p[0]))
    ok(lib.ev_cuda_free(q[0]))
    status = ffi.new("int*", -1)
    bad = np.array([9], np.int64)                    # an id out of range sets the status word
    out = np.zeros((1, 2), np.float32)
    ok(lib.ev_cuda_status(status, 1))
    ok(lib.ev_cuda_one_hot_f32(ptr(ffi, bad), ptr(ffi, out), 1, 2))
    ok(lib.ev_cuda_status(status, 1))
    assert status[0] == 1 and np.isnan(out).all()
    ok(lib.ev_cuda_status(status, 0))
    assert status[0] == 0


@check("ev_cuda_capture_begin", "ev_cuda_capture_end", "ev_cuda_graph_launch", "ev_cuda_graph_free",
       "ev_cuda_stream")
def graphs(lib, ffi):
    """A capture records launches and asynchronous copies with the arguments they had, runs
    them at each launch of the graph, and fails on what a capture cannot hold."""
    x = np.linspace(-2, 2, 8).astype(np.float32)
    out, zeroed = np.zeros(8, np.float32), np.full(8, 5.0, np.float32)
    graph = ffi.new("void**")
    assert lib.ev_cuda_stream() == ffi.NULL, "the default stream outside a capture"
    ok(lib.ev_cuda_capture_begin())
    assert lib.ev_cuda_stream() != ffi.NULL, "the capture's own stream"
    assert lib.ev_cuda_capture_begin() != 0, "one capture at a time"
    ok(lib.ev_cuda_tanh_f32(ptr(ffi, x), ptr(ffi, out), 8))
    ok(lib.ev_cuda_memset(ptr(ffi, zeroed), 0, 16))
    ok(lib.ev_cuda_capture_end(graph))
    assert not out.any() and (zeroed == 5).all(), "captured, not run"
    x[:] = 0.5                                      # the graph reads memory, not a snapshot
    ok(lib.ev_cuda_graph_launch(graph[0]))
    np.testing.assert_allclose(out, np.tanh(np.full(8, 0.5, np.float32)), rtol=1e-6)
    assert (zeroed[:4] == 0).all() and (zeroed[4:] == 5).all()
    ok(lib.ev_cuda_graph_free(graph[0]))
    ok(lib.ev_cuda_capture_begin())
    assert lib.ev_cuda_synchronize() == 900, "cudaErrorStreamCaptureUnsupported"
    assert lib.ev_cuda_capture_end(graph) == 901 and graph[0] == ffi.NULL, "the capture was invalidated"
    assert lib.ev_cuda_capture_end(graph) != 0, "no capture to end"
    ok(lib.ev_cuda_synchronize())


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_entry_points_on_the_twin_against_numpy(name, twin):
    from exprvm.device import loader
    ffi, lib = loader.loaded()
    rec = Recorder(lib)
    fn, symbols = CHECKS[name]
    fn(rec, ffi)
    assert symbols <= rec.called, f"{name} did not call {sorted(symbols - rec.called)}"


def test_every_declared_entry_point_has_a_check():
    covered = set().union(*(s for _, s in CHECKS.values()))
    assert declared() - covered == set(), f"entry points no check calls: {sorted(declared() - covered)}"
    assert covered - declared() == set(), f"checks of undeclared entry points: {sorted(covered - declared())}"
