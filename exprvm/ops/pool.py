"""2-d pooling over NCHW input, named as torch.nn.functional: max_pool2d, avg_pool2d
(zero padding counted in the mean, torch's default count_include_pad=True) and
global_avg_pool2d ((N, C, H, W) -> (N, C, 1, 1), as adaptive_avg_pool2d(x, 1)).

Max-pool's gradient goes to the arg-max of each window. Ties: one winner, the
first maximum in row-major order over the window (padding never wins; a NaN wins
over numbers, the first NaN among NaNs), the same rule in numpy and in the C kernel.
Its ops close under differentiation:

    max_pool2d(x)              vjp x: max_pool2d_grad(g, x)
    max_pool2d_grad(g, x)      scatters g to each window's arg-max; vjp g: max_pool2d_select(h, x)
    max_pool2d_select(h, x)    h at each window's arg-max; vjp h: max_pool2d_grad(v, x)

(the arg-max is piecewise constant in x, so no gradient flows to x through it).
avg_pool2d and avg_pool2d_grad are linear and each other's VJP.

Params as the nodes store them: kernel_size, stride, padding: pairs of ints
(padding symmetric, at most half the kernel, as torch requires).
"""
import numpy as np

from ..core import Row, apply, defop, same_float_dtype, shape_of
from ..errors import ShapeError
from .conv import check_fits, interior, ints, naive_windows, pad, param_error, windows

_ONE = (1, 1)


def _pairs(padding):
    return tuple((p, p) for p in padding)


def _geometry(x_shape, kernel_size, stride, padding):
    return check_fits(x_shape[2:], kernel_size, stride, _pairs(padding), _ONE)


# -- numpy impls ------------------------------------------------------------------------

def _max_pool(x, kernel_size, stride, padding):
    x = np.asarray(x)
    out = _geometry(x.shape, kernel_size, stride, padding)
    xp = pad(x, _pairs(padding), -np.inf)
    return np.ascontiguousarray(windows(xp, kernel_size, stride, _ONE, out).max(axis=(-2, -1)))


def argmax(x, kernel_size, stride, padding):
    """Each window's winner as a flat index into its (H, W) plane: (N, C, oh, ow) int64."""
    x = np.asarray(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = out = _geometry(x.shape, kernel_size, stride, padding)
    win = windows(pad(x, _pairs(padding), -np.inf), kernel_size, stride, _ONE, out)
    win = win.reshape(x.shape[:2] + out + (kh * kw,))
    plane = np.ones((1, 1) + x.shape[2:], bool)
    valid = windows(pad(plane, _pairs(padding), False), kernel_size, stride, _ONE, out).reshape(out + (kh * kw,))
    m = win.max(axis=-1, keepdims=True)
    nan = np.isnan(m)
    # NOTE: padding is -inf, so a window of real -infs ties with it: candidates are real only.
    cand = valid & np.where(nan, np.isnan(win), win == m)
    j = cand.argmax(axis=-1)                                   # the first winner
    row = np.arange(oh).reshape(oh, 1) * sh - ph + j // kw
    col = np.arange(ow).reshape(1, ow) * sw - pw + j % kw
    return (row * x.shape[3] + col).astype(np.int64)


def _flat_planes(idx, plane):
    """Indices into the flattened (N*C*plane) array for per-plane flat indices idx."""
    n, c = idx.shape[:2]
    return (idx + (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, 1, 1)).ravel()


def _max_pool_grad(g, x, kernel_size, stride, padding):
    g, x = np.asarray(g), np.asarray(x)
    plane = x.shape[2] * x.shape[3]
    flat = _flat_planes(argmax(x, kernel_size, stride, padding), plane)
    dx = np.bincount(flat, weights=g.ravel(), minlength=x.size)   # sums where windows share a winner
    return dx.astype(x.dtype).reshape(x.shape)


def _max_pool_select(h, x, kernel_size, stride, padding):
    h, x = np.asarray(h), np.asarray(x)
    flat = _flat_planes(argmax(x, kernel_size, stride, padding), x.shape[2] * x.shape[3])
    return h.ravel()[flat].reshape(x.shape[:2] + _geometry(x.shape, kernel_size, stride, padding))


def _avg_pool(x, kernel_size, stride, padding):
    x = np.asarray(x)
    out = _geometry(x.shape, kernel_size, stride, padding)
    s = windows(pad(x, _pairs(padding)), kernel_size, stride, _ONE, out).sum(axis=(-2, -1))
    return np.ascontiguousarray(s / np.asarray(kernel_size[0] * kernel_size[1], x.dtype))


def _avg_pool_grad(g, in_size, kernel_size, stride, padding):
    g = np.asarray(g)
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, stride, g.shape[2:]
    pairs = _pairs(padding)
    dxp = np.zeros(g.shape[:2] + tuple(n + 2 * p for n, p in zip(in_size, padding)), g.dtype)
    share = g / np.asarray(kh * kw, g.dtype)
    for i, j in np.ndindex(kh, kw):     # NOTE: one offset at a time: windows overlap
        dxp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += share
    return np.ascontiguousarray(dxp[interior(in_size, pairs)])


# -- rules ----------------------------------------------------------------------------

def _four_d(what, n):
    if n.ndim != 4:
        raise ShapeError(f"{what} must be 4-d (NCHW), got shape {n.shape}")


def _pool_rule(x, kernel_size, stride, padding):
    dt = same_float_dtype(x)
    _four_d("input", x)
    return x.shape[:2] + _geometry(x.shape, kernel_size, stride, padding), dt


def _pooled_pair_rule(what):
    def rule(a, x, kernel_size, stride, padding):
        dt = same_float_dtype(a, x)
        _four_d("input", x)
        pooled = x.shape[:2] + _geometry(x.shape, kernel_size, stride, padding)
        want = pooled if what == "gradient" else x.shape
        if a.shape != want:
            raise ShapeError(f"the {what} {a.shape} must have shape {want} for an input of {x.shape}")
        return (x.shape if what == "gradient" else pooled), dt
    return rule


def _avg_grad_rule(g, in_size, kernel_size, stride, padding):
    dt = same_float_dtype(g)
    _four_d("gradient", g)
    out = check_fits(in_size, kernel_size, stride, _pairs(padding), _ONE)
    if g.shape[2:] != out:
        raise ShapeError(f"the gradient {g.shape} does not match the pooled size {out} of an input of {in_size}")
    return g.shape[:2] + tuple(in_size), dt


# -- naive references: windows clipped to the input, loops ------------------------------

def _naive_out(x_shape, kernel_size, stride, padding):
    """The output's spatial size, windows counted one by one (not the ops' formula)."""
    return tuple(naive_windows(n + 2 * p, k, s) for n, k, s, p in zip(x_shape[2:], kernel_size, stride, padding))


def _clipped(x_shape, kernel_size, stride, padding):
    """(n, c, oy, ox, rows, cols) per output: the window's real part, as slices."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = _naive_out(x_shape, kernel_size, stride, padding)
    for n, c, oy, ox in np.ndindex(x_shape[0], x_shape[1], oh, ow):
        y0, x0 = oy * sh - ph, ox * sw - pw
        yield n, c, oy, ox, slice(max(y0, 0), min(y0 + kh, x_shape[2])), slice(max(x0, 0), min(x0 + kw, x_shape[3]))


def naive_max_pool(x, kernel_size, stride, padding):
    y = np.zeros(x.shape[:2] + _naive_out(x.shape, kernel_size, stride, padding))
    for n, c, oy, ox, rows, cols in _clipped(x.shape, kernel_size, stride, padding):
        y[n, c, oy, ox] = x[n, c, rows, cols].max()
    return y


def _winner(x, n, c, rows, cols):
    sub = x[n, c, rows, cols]
    j = int(np.argmax(sub))            # numpy's argmax: the first maximum, row-major
    return rows.start + j // sub.shape[1], cols.start + j % sub.shape[1]


def naive_max_pool_grad(g, x, kernel_size, stride, padding):
    dx = np.zeros(x.shape)
    for n, c, oy, ox, rows, cols in _clipped(x.shape, kernel_size, stride, padding):
        dx[(n, c) + _winner(x, n, c, rows, cols)] += g[n, c, oy, ox]
    return dx


def naive_max_pool_select(h, x, kernel_size, stride, padding):
    y = np.zeros(x.shape[:2] + _naive_out(x.shape, kernel_size, stride, padding))
    for n, c, oy, ox, rows, cols in _clipped(x.shape, kernel_size, stride, padding):
        y[n, c, oy, ox] = h[(n, c) + _winner(x, n, c, rows, cols)]
    return y


def naive_avg_pool(x, kernel_size, stride, padding):
    y = np.zeros(x.shape[:2] + _naive_out(x.shape, kernel_size, stride, padding))
    for n, c, oy, ox, rows, cols in _clipped(x.shape, kernel_size, stride, padding):
        y[n, c, oy, ox] = x[n, c, rows, cols].sum() / (kernel_size[0] * kernel_size[1])
    return y


def naive_avg_pool_grad(g, in_size, kernel_size, stride, padding):
    dx = np.zeros(g.shape[:2] + tuple(in_size))
    for n, c, oy, ox, rows, cols in _clipped(dx.shape, kernel_size, stride, padding):
        dx[n, c, rows, cols] += g[n, c, oy, ox] / (kernel_size[0] * kernel_size[1])
    return dx


# -- the ops ----------------------------------------------------------------------------

_X = ("f", (2, 3, 7, 6), -1.0, 1.0)
_G = ("f", (2, 3, 4, 4), -1.0, 1.0)
_P = dict(kernel_size=(3, 2), stride=(2, 2), padding=(1, 1))   # overlapping rows, padding both ways

defop("max_pool2d", _max_pool, _pool_rule,
      vjp=(lambda g, ans, x, **p: apply("max_pool2d_grad", g, x, **p),),
      row=Row((_X,), dict(_P), ref=naive_max_pool), doc="2-d max pooling (NCHW)")
defop("max_pool2d_grad", _max_pool_grad, _pooled_pair_rule("gradient"),
      vjp=(lambda h, ans, g, x, **p: apply("max_pool2d_select", h, x, **p), None),
      row=Row((_G, _X), dict(_P), ref=naive_max_pool_grad),
      doc="max_pool2d's gradient: g added at each window's arg-max of x")
defop("max_pool2d_select", _max_pool_select, _pooled_pair_rule("value"),
      vjp=(lambda v, ans, h, x, **p: apply("max_pool2d_grad", v, x, **p), None),
      row=Row((_X, _X), dict(_P), ref=naive_max_pool_select),
      doc="h read at each window's arg-max of x (max_pool2d_grad's VJP)")
defop("avg_pool2d", _avg_pool, _pool_rule,
      vjp=(lambda g, ans, x, **p: apply("avg_pool2d_grad", g, in_size=tuple(x.shape[2:]), **p),),
      row=Row((_X,), dict(_P), ref=naive_avg_pool), doc="2-d average pooling (NCHW), zero padding counted")
defop("avg_pool2d_grad", _avg_pool_grad, _avg_grad_rule,
      vjp=(lambda h, ans, g, in_size, **p: apply("avg_pool2d", h, **p),),
      row=Row((_G,), dict(_P, in_size=(7, 6)), ref=naive_avg_pool_grad),
      doc="avg_pool2d's gradient: each output's g shared out over its window")


# -- user functions --------------------------------------------------------------------

def pool_params(op, kernel_size, stride, padding, x):
    kernel = ints(kernel_size, 2, "kernel_size", op)
    stride = kernel if stride is None else ints(stride, 2, "stride", op)
    padding = ints(padding, 2, "padding", op, low=0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise param_error(op, f"padding {padding} must be at most half the kernel {kernel}", x)
    return dict(kernel_size=kernel, stride=stride, padding=padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kernel_size windows every stride (default: kernel_size) of NCHW x, padded
    with -inf; as torch.nn.functional.max_pool2d."""
    return apply("max_pool2d", x, **pool_params("max_pool2d", kernel_size, stride, padding, x))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over kernel_size windows every stride (default: kernel_size) of NCHW x, the
    zero padding counted (torch's default count_include_pad=True)."""
    return apply("avg_pool2d", x, **pool_params("avg_pool2d", kernel_size, stride, padding, x))


def global_avg_pool2d(x):
    """Mean of each channel's plane: (N, C, H, W) -> (N, C, 1, 1)."""
    if len(shape_of(x)) != 4:
        raise param_error("global_avg_pool2d", f"input must be 4-d (NCHW), got shape {shape_of(x)}", x)
    return mean(x, axis=(2, 3), keepdims=True)


from .reduce import mean  # noqa: E402
