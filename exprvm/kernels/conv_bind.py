"""The convolution and pooling runners a compiled program binds (see kernels/conv.py).

bind_*(backend, *ins, out, tmps, geo[, groups]) -> (fn, args): the arrays are the
instruction's fixed buffers, geo the Geometry of the op's input. Everything is
checked here, once (exact ndarray type, dtype, shape against the geometry,
C-contiguity, real buffer sizes, no overlap of out with an input); fn(*args) then
runs C kernels and numpy out= calls only. conv_tmps(...) says which scratch buffers
each runner wants, in the order it takes them.

float32 on the C backend where gemm.preferred() (own_gemm): one C call per run,
csrc/ev_conv_gemm.c, with one work buffer (conv_tmps says its size). Otherwise:

Layouts: cols (n, groups, c/groups*kh*kw, oh*ow) is im2col's output seen per
group; the weight (o, c/groups, kh, kw) is read as (groups, o/groups, c/groups*kh*kw),
so one batched GEMM (numpy matmul broadcasting the weight over the batch) makes
out (n, groups, o/groups, oh*ow), which is out's own NCHW memory.
"""
import numpy as np

from exprvm.errors import KernelError, ShapeError
from exprvm.kernels import gemm
from exprvm.kernels.checks import kernel_dtype
from exprvm.kernels.conv import _cfn, _check, _idx_ptr, _lib, _ptr

_FORWARD, _GRAD_INPUT, _GRAD_WEIGHT = "forward", "grad_input", "grad_weight"


def _fixed(a, shape, dt, op, name, writable=False):
    """a, to be bound as it is: a copy would not see later writes to it."""
    if type(a) is not np.ndarray:
        raise KernelError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dt:
        raise KernelError(f"{op}: {name} has dtype {a.dtype}, the instruction {dt}")
    if a.shape != tuple(shape):
        raise ShapeError(f"{op}: {name} has shape {a.shape}, the geometry needs {tuple(shape)}")
    if not (a.flags.c_contiguous and a.flags.aligned) or (writable and not a.flags.writeable):
        raise KernelError(f"{op}: {name} must be C-contiguous, aligned{' and writable' if writable else ''}")
    return a


def _view(a, shape, op):
    try:
        return np.reshape(a, shape, copy=False)
    except ValueError:
        raise KernelError(f"{op}: cannot view {a.shape} as {shape} without a copy") from None


def _apart(op, out, *ins):
    for a in ins:
        if np.may_share_memory(a, out):
            raise KernelError(f"{op}: out overlaps an input")


def _split(geo, groups, out_channels):
    n, c = geo.x_shape[:2]
    if groups < 1 or c % groups or out_channels % groups:
        raise ShapeError(f"groups={groups} does not divide {c} input and {out_channels} output channels")
    k = c // groups * geo.kernel[0] * geo.kernel[1]
    return n, groups, out_channels // groups, k, geo.out_hw[0] * geo.out_hw[1]


def own_gemm(backend, dtype):
    """Do the C runners of this dtype make their products with csrc/ev_gemm.c (float32,
    where gemm.preferred() says so) rather than numpy's BLAS?"""
    return backend == "c" and np.dtype(dtype) == np.float32 and gemm.preferred()


def conv_tmps(which, backend, geo, groups, out_channels, dtype):
    """((shape, dtype), ...) of the scratch the runner `which` takes on `backend`."""
    n, g, og, k, p = _split(geo, groups, out_channels)
    cols = (geo.cols_shape, dtype)
    padded = (geo.padded_shape, dtype)
    prod = ((n, g, og, k), dtype)
    if own_gemm(backend, dtype):
        return (((int(_lib().lib.ev_conv_gemm_work_f32(geo.cdata(), out_channels, groups)),), dtype),)
    if which == _FORWARD:
        return (cols,) if backend == "c" else (padded, cols)
    if which == _GRAD_INPUT:
        return (cols,) if backend == "c" else (cols, padded)
    return (cols, prod) if backend == "c" else (padded, cols, prod)


def _scratch(tmps, which, backend, geo, groups, out_channels, dt, op, *others):
    """The scratch buffers, checked: shapes as conv_tmps says, apart from each other and
    from `others` (the instruction's inputs and output)."""
    want = conv_tmps(which, backend, geo, groups, out_channels, dt)
    if len(tmps) != len(want):
        raise KernelError(f"{op}: expected {len(want)} scratch buffers, got {len(tmps)}")
    bufs = [_fixed(t, s, dt, op, f"scratch {i}", writable=True) for i, (t, (s, _)) in enumerate(zip(tmps, want))]
    for i, t in enumerate(bufs):
        _apart(op, t, *bufs[:i], *others)
    return bufs


def _per_sample(name, a, b, out, work, geo, out_channels, groups, op):
    """The C runner of csrc/ev_conv_gemm.c (im2col and the product one sample at a time);
    a, b, out and work already checked by the caller."""
    cfn = getattr(_lib().lib, f"ev_{name}_gemm_f32")
    f32 = np.dtype(np.float32)
    args = (_ptr(a, f32, op), _ptr(b, f32, op), _ptr(out, f32, op, True), geo.cdata(), out_channels, groups,
            _ptr(work, f32, op, True), work.size)
    return (lambda: _check(cfn(*args), op)), ()


def _im2col_into(backend, x, cols, xp, geo, dt, op):
    """A thunk filling cols (n, c*kh*kw, oh*ow) from fixed x."""
    if backend == "c":
        cfn, px, pc, gp = _cfn("im2col", dt), _ptr(x, dt, op), _ptr(cols, dt, op, True), geo.cdata()
        return lambda: _check(cfn(px, pc, gp), op)
    inner, win = geo.interior(xp), geo.windows(xp)
    cols6 = _view(cols, geo.x_shape[:2] + geo.kernel + geo.out_hw, op)

    def run():
        xp.fill(0)
        np.copyto(inner, x)
        np.copyto(cols6, win)
    return run


def bind_conv(backend, x, w, out, tmps, geo, groups=1):
    """out (n, o, oh, ow) = conv2d(x, w): im2col, then one GEMM."""
    op = "conv2d"
    dt = kernel_dtype(x.dtype)
    n, g, og, k, p = _split(geo, groups, w.shape[0])
    x = _fixed(x, geo.x_shape, dt, op, "x")
    w = _fixed(w, (g * og, k // (geo.kernel[0] * geo.kernel[1])) + geo.kernel, dt, op, "w")
    out = _fixed(out, (n, g * og) + geo.out_hw, dt, op, "out", writable=True)
    _apart(op, out, x, w)
    bufs = _scratch(tmps, _FORWARD, backend, geo, groups, w.shape[0], dt, op, x, w, out)
    if own_gemm(backend, dt):
        return _per_sample("conv2d", x, w, out, bufs[0], geo, g * og, groups, op)
    xp, cols = (None, bufs[0]) if backend == "c" else bufs
    fill = _im2col_into(backend, x, cols, xp, geo, dt, op)
    w3, cols4, out4 = _view(w, (g, og, k), op), _view(cols, (n, g, k, p), op), _view(out, (n, g, og, p), op)
    matmul = np.matmul

    def run():
        fill()
        matmul(w3, cols4, out=out4)
    return run, ()


def bind_conv_grad_input(backend, gy, w, out, tmps, geo, groups=1):
    """out = dx (geo.x_shape) from the output's gradient gy: one GEMM, then col2im."""
    op = "conv2d_grad_input"
    dt = kernel_dtype(gy.dtype)
    n, g, og, k, p = _split(geo, groups, w.shape[0])
    gy = _fixed(gy, (n, g * og) + geo.out_hw, dt, op, "g")
    w = _fixed(w, (g * og, k // (geo.kernel[0] * geo.kernel[1])) + geo.kernel, dt, op, "w")
    out = _fixed(out, geo.x_shape, dt, op, "out", writable=True)
    _apart(op, out, gy, w)
    bufs = _scratch(tmps, _GRAD_INPUT, backend, geo, groups, w.shape[0], dt, op, gy, w, out)
    if own_gemm(backend, dt):
        return _per_sample("conv2d_grad_input", gy, w, out, bufs[0], geo, g * og, groups, op)
    cols = bufs[0]
    wt, g4, cols4 = _view(w, (g, og, k), op).transpose(0, 2, 1), _view(gy, (n, g, og, p), op), \
        _view(cols, (n, g, k, p), op)
    matmul = np.matmul
    if backend == "c":
        cfn, pc, po, gp = _cfn("col2im", dt), _ptr(cols, dt, op), _ptr(out, dt, op, True), geo.cdata()

        def run():
            matmul(wt, g4, out=cols4)
            _check(cfn(pc, po, gp), op)
        return run, ()
    dxp = bufs[1]
    cols6 = _view(cols, geo.x_shape[:2] + geo.kernel + geo.out_hw, op)
    (sh, sw), (dh, dw), (oh, ow) = geo.stride, geo.dilation, geo.out_hw
    # NOTE: one add per kernel offset: the offsets' taps are distinct, windows overlap.
    adds = [(dxp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw],
             cols6[:, :, i, j]) for i in range(geo.kernel[0]) for j in range(geo.kernel[1])]
    inner, add = geo.interior(dxp), np.add

    def run():
        matmul(wt, g4, out=cols4)
        dxp.fill(0)
        for dst, src in adds:
            add(dst, src, out=dst)
        np.copyto(out, inner)
    return run, ()


def bind_conv_grad_weight(backend, x, gy, out, tmps, geo, groups=1):
    """out = dw (o, c/groups, kh, kw) from x and the output's gradient gy."""
    op = "conv2d_grad_weight"
    dt = kernel_dtype(x.dtype)
    n, g, og, k, p = _split(geo, groups, gy.shape[1])
    x = _fixed(x, geo.x_shape, dt, op, "x")
    gy = _fixed(gy, (n, g * og) + geo.out_hw, dt, op, "g")
    out = _fixed(out, (g * og, k // (geo.kernel[0] * geo.kernel[1])) + geo.kernel, dt, op, "out", writable=True)
    _apart(op, out, x, gy)
    bufs = _scratch(tmps, _GRAD_WEIGHT, backend, geo, groups, gy.shape[1], dt, op, x, gy, out)
    if own_gemm(backend, dt):
        return _per_sample("conv2d_grad_weight", x, gy, out, bufs[0], geo, g * og, groups, op)
    xp, cols, prod = (None, *bufs) if backend == "c" else bufs
    fill = _im2col_into(backend, x, cols, xp, geo, dt, op)
    g4, cols_t = _view(gy, (n, g, og, p), op), _view(cols, (n, g, k, p), op).swapaxes(2, 3)
    out3 = _view(out, (g, og, k), op)
    matmul, reduce = np.matmul, np.add.reduce

    def run():
        fill()
        matmul(g4, cols_t, out=prod)
        reduce(prod, 0, None, out3)
    return run, ()


# -- pooling ----------------------------------------------------------------------------

def _pool_io(x, out, geo, op, out_shape):
    dt = kernel_dtype(x.dtype)
    x = _fixed(x, geo.x_shape if out_shape == geo.pooled_shape else geo.pooled_shape, dt, op, "x")
    out = _fixed(out, out_shape, dt, op, "out", writable=True)
    _apart(op, out, x)
    return x, out, dt


def _padded_windows(x, out, tmps, geo, dt, op, fill_value):
    """numpy: a thunk copying x into its padded scratch, and that scratch's windows."""
    if len(tmps) != 1:
        raise KernelError(f"{op}: the numpy runner takes one scratch buffer (the padded input)")
    xp = _fixed(tmps[0], geo.padded_shape, dt, op, "scratch 0", writable=True)
    _apart(op, xp, x, out)
    inner = geo.interior(xp)

    def fill():
        xp.fill(fill_value)
        np.copyto(inner, x)
    return fill, geo.windows(xp)


def bind_max_pool2d(backend, x, out, tmps, geo):
    """out (n, c, oh, ow): each window's max (numpy: over a -inf padded scratch)."""
    op = "max_pool2d"
    x, out, dt = _pool_io(x, out, geo, op, geo.pooled_shape)
    if backend == "c":
        cfn, px, po, gp, null = _cfn(op, dt), _ptr(x, dt, op), _ptr(out, dt, op, True), geo.cdata(), _lib().ffi.NULL
        return (lambda: _check(cfn(px, po, null, gp), op)), ()
    fill, win = _padded_windows(x, out, tmps, geo, dt, op, -np.inf)

    def run():
        fill()
        np.maximum.reduce(win, (2, 3), None, out)
    return run, ()


def bind_max_pool2d_grad(backend, gy, x, out, tmps, geo):
    """out = dx: the arg-max of every window found again (C), then gy scattered there.
    tmps: one int64 buffer of the pooled shape (the arg-maxes)."""
    op = "max_pool2d_grad"
    if backend != "c":
        raise KernelError(f"{op}: only the C backend has a bound runner (numpy runs the op's impl)")
    dt = kernel_dtype(x.dtype)
    x = _fixed(x, geo.x_shape, dt, op, "x")
    gy = _fixed(gy, geo.pooled_shape, dt, op, "g")
    out = _fixed(out, geo.x_shape, dt, op, "out", writable=True)
    _apart(op, out, x, gy)
    if len(tmps) != 1:
        raise KernelError(f"{op}: expected one scratch buffer (the arg-maxes)")
    am = tmps[0]
    pa_w = _idx_ptr(am, op, gy.size, writable=True)
    _apart(op, am, x, gy, out)
    fwd, bwd = _cfn("max_pool2d", dt), _cfn(op, dt)
    px, pg, po, gp, null = _ptr(x, dt, op), _ptr(gy, dt, op), _ptr(out, dt, op, True), geo.cdata(), _lib().ffi.NULL

    def run():
        _check(fwd(px, null, pa_w, gp), op)
        _check(bwd(pg, pa_w, po, gp), op)
    return run, ()


def bind_avg_pool2d(backend, x, out, tmps, geo):
    """out (n, c, oh, ow): each window's sum / (kh*kw), zero padding counted."""
    op = "avg_pool2d"
    x, out, dt = _pool_io(x, out, geo, op, geo.pooled_shape)
    if backend == "c":
        cfn, px, po, gp = _cfn(op, dt), _ptr(x, dt, op), _ptr(out, dt, op, True), geo.cdata()
        return (lambda: _check(cfn(px, po, gp), op)), ()
    fill, win = _padded_windows(x, out, tmps, geo, dt, op, 0.0)
    scale = 1.0 / (geo.kernel[0] * geo.kernel[1])

    def run():
        fill()
        np.add.reduce(win, (2, 3), None, out)
        np.multiply(out, scale, out=out)
    return run, ()


def bind_avg_pool2d_grad(backend, gy, out, tmps, geo):
    """out = dx: each g / (kh*kw) added over its window (C only)."""
    op = "avg_pool2d_grad"
    if backend != "c":
        raise KernelError(f"{op}: only the C backend has a bound runner (numpy runs the op's impl)")
    gy, out, dt = _pool_io(gy, out, geo, op, geo.x_shape)
    cfn, pg, po, gp = _cfn(op, dt), _ptr(gy, dt, op), _ptr(out, dt, op, True), geo.cdata()
    return (lambda: _check(cfn(pg, po, gp), op)), ()
