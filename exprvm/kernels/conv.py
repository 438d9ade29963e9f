"""Host kernels of convolution and pooling (csrc/ev_conv.c), and the runners the tape binds.

Checked calls, every argument validated (exact numpy.ndarray type, float32/float64,
C-contiguous or copied, out's shape, writability and real buffer size); out=None
allocates:

    cols = im2col(x, kernel_size, stride, padding, dilation)      # (n, c*kh*kw, oh*ow)
    x = col2im(cols, x_shape, kernel_size, stride, padding, dilation)
    out, argmax = max_pool2d(x, kernel_size, stride, padding)
    dx = max_pool2d_grad(g, argmax, x_shape, kernel_size, stride, padding)
    avg_pool2d(x, ...), avg_pool2d_grad(g, x_shape, ...)

padding is an int, two ints, or ((top, bottom), (left, right)).

The bound runners a compiled program uses are in conv_bind.py: bind_*(backend, ...,
geo) -> (fn, args), every check, view and C pointer made once, when a machine binds
its buffers; fn(*args) then makes one C call (backend "c") or a few numpy out= calls
("numpy") and the matrix products (numpy matmul with out=, i.e. BLAS), and allocates
nothing.
Convolutions are im2col + one batched GEMM (groups batch too), or, float32 on the C
backend of a 512-bit build, csrc/ev_conv_gemm.c's per-sample runners (conv_bind.own_gemm);
conv1d runs as conv2d over a height of 1 (the caller reshapes).
"""
import numpy as np

from exprvm.errors import BackendError, IndexRangeError, KernelError, ShapeError
from exprvm.kernels import host
from exprvm.kernels.checks import CTYPE, SUFFIX, check_input, check_out, kernel_dtype

_as_strided = np.lib.stride_tricks.as_strided


def _ints(v, what):
    vals = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(vals) != 2 or not all(isinstance(a, (int, np.integer)) for a in vals):
        raise ShapeError(f"{what} must be an int or two ints, got {v!r}")
    return tuple(int(a) for a in vals)


def _pads(p):
    if isinstance(p, (int, np.integer)):
        return ((int(p), int(p)),) * 2
    p = tuple(p)
    if len(p) == 2 and all(isinstance(a, (int, np.integer)) for a in p):
        return tuple((int(a), int(a)) for a in p)
    if len(p) == 2 and all(len(tuple(a)) == 2 for a in p):
        return tuple(tuple(int(b) for b in a) for a in p)
    raise ShapeError(f"padding must be an int, two ints or two (before, after) pairs, got {p!r}")


class Geometry:
    """Where the windows of a kernel sit on an (n, c, h, w) input; see csrc/ev_conv.h."""

    __slots__ = ("x_shape", "kernel", "stride", "padding", "dilation", "out_hw", "_c")

    def __init__(self, x_shape, kernel_size, stride=1, padding=0, dilation=1):
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) != 4 or min(x_shape) < 0 or min(x_shape[2:]) < 1:
            raise ShapeError(f"input must be (n, c, h, w) with h, w >= 1, got {x_shape}")
        self.x_shape = x_shape
        self.kernel, self.stride = _ints(kernel_size, "kernel_size"), _ints(stride, "stride")
        self.padding, self.dilation = _pads(padding), _ints(dilation, "dilation")
        if min(self.kernel + self.stride + self.dilation) < 1 or min(sum(self.padding, ())) < 0:
            raise ShapeError(f"kernel {self.kernel}, stride {self.stride}, dilation {self.dilation} must be "
                             f">= 1 and padding {self.padding} >= 0")
        out = []
        for n, k, s, (lo, hi), d in zip(x_shape[2:], self.kernel, self.stride, self.padding, self.dilation):
            span = d * (k - 1) + 1
            if n + lo + hi < span:
                raise ShapeError(f"kernel {self.kernel} (dilation {self.dilation}) is larger than the padded "
                                 f"input {x_shape[2:]} + {self.padding}")
            out.append((n + lo + hi - span) // s + 1)
        self.out_hw = tuple(out)
        self._c = None

    @property
    def cols_shape(self):
        n, c = self.x_shape[:2]
        return (n, c * self.kernel[0] * self.kernel[1], self.out_hw[0] * self.out_hw[1])

    @property
    def pooled_shape(self):
        return self.x_shape[:2] + self.out_hw

    @property
    def padded_shape(self):
        return self.x_shape[:2] + tuple(n + lo + hi for n, (lo, hi) in zip(self.x_shape[2:], self.padding))

    def cdata(self):
        """The ev_conv_geom struct (made once; the Geometry keeps it alive)."""
        if self._c is None:
            (n, c, h, w), (kh, kw), (sh, sw) = self.x_shape, self.kernel, self.stride
            (dh, dw), (oh, ow) = self.dilation, self.out_hw
            self._c = _lib().ffi.new("ev_conv_geom *", dict(
                n=n, c=c, h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw, ph=self.padding[0][0],
                pw=self.padding[1][0], dh=dh, dw=dw, oh=oh, ow=ow))
        return self._c

    def windows(self, xp):
        """Read-only (n, c, kh, kw, oh, ow) view of a padded array of padded_shape."""
        st = xp.strides
        return _as_strided(xp, xp.shape[:2] + self.kernel + self.out_hw,
                           st[:2] + (st[2] * self.dilation[0], st[3] * self.dilation[1],
                                     st[2] * self.stride[0], st[3] * self.stride[1]), writeable=False)

    def interior(self, xp):
        (t, _), (l, _) = self.padding
        return xp[:, :, t:t + self.x_shape[2], l:l + self.x_shape[3]]


def available():
    """Are the conv kernels built (the C extension loads and has them)?"""
    return host._ev_c is not None and hasattr(host._ev_c.lib, "ev_im2col_f32")


def _lib():
    if host._ev_c is None:
        raise BackendError(f"the conv kernels need the C extension: {host.C_STATUS[1]}")
    return host._ev_c


def _cfn(name, dt):
    return getattr(_lib().lib, f"ev_{name}_{SUFFIX[dt]}")


def _ptr(a, dt, op, writable=False):
    return host.pointer(a, CTYPE[dt] + "[]", a.size, op, writable)


def _idx_ptr(a, op, n, writable=False):
    if type(a) is not np.ndarray or a.dtype != np.int64 or not (a.flags.c_contiguous and a.flags.aligned):
        raise KernelError(f"{op}: argmax must be a C-contiguous int64 numpy.ndarray")
    if a.size != n:
        raise ShapeError(f"{op}: argmax has {a.size} entries, the pooled output {n}")
    return host.pointer(a, "int64_t[]", n, op, writable)


def _check(rc, op):
    if rc == -2:
        raise IndexRangeError(f"{op}: an argmax index is outside its input plane")
    if rc:
        raise KernelError(f"{op}: the kernel rejected the geometry (code {rc})")


def _disjoint(op, *arrays):
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            if np.may_share_memory(a, b):
                raise KernelError(f"{op}: out overlaps an input")


def _float_input(x, op, name="x"):
    if type(x) is not np.ndarray:
        raise KernelError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    dt = kernel_dtype(x.dtype)
    return check_input(x, dt, op, name), dt


def _shaped(x, shape, op, name):
    if x.shape != tuple(shape):
        raise ShapeError(f"{op}: {name} has shape {x.shape}, the geometry needs {tuple(shape)}")


# -- checked calls ---------------------------------------------------------------------

def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """x (n, c, h, w) -> cols (n, c*kh*kw, oh*ow), zeros where a window reads padding."""
    x, dt = _float_input(x, "im2col")
    geo = Geometry(x.shape, kernel_size, stride, padding, dilation)
    out = check_out(out, geo.cols_shape, dt, "im2col")
    _disjoint("im2col", x, out)
    _check(_cfn("im2col", dt)(_ptr(x, dt, "im2col"), _ptr(out, dt, "im2col", True), geo.cdata()), "im2col")
    return out


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """The adjoint of im2col: every column entry added back at its tap of x (x_shape)."""
    cols, dt = _float_input(cols, "col2im", "cols")
    geo = Geometry(x_shape, kernel_size, stride, padding, dilation)
    _shaped(cols, geo.cols_shape, "col2im", "cols")
    out = check_out(out, geo.x_shape, dt, "col2im")
    _disjoint("col2im", cols, out)
    _check(_cfn("col2im", dt)(_ptr(cols, dt, "col2im"), _ptr(out, dt, "col2im", True), geo.cdata()), "col2im")
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, out=None, argmax=None):
    """(out, argmax): each window's max over its real taps, and where it is (iy*w + ix)."""
    x, dt = _float_input(x, "max_pool2d")
    geo = Geometry(x.shape, kernel_size, kernel_size if stride is None else stride, padding)
    out = check_out(out, geo.pooled_shape, dt, "max_pool2d")
    if argmax is None:
        argmax = np.empty(geo.pooled_shape, np.int64)
    pa = _idx_ptr(argmax, "max_pool2d", out.size, writable=True)
    _disjoint("max_pool2d", x, out, argmax)
    _check(_cfn("max_pool2d", dt)(_ptr(x, dt, "max_pool2d"), _ptr(out, dt, "max_pool2d", True), pa,
                                  geo.cdata()), "max_pool2d")
    return out, argmax


def max_pool2d_grad(g, argmax, x_shape, kernel_size, stride=None, padding=0, out=None):
    """dx (x_shape): g added at each window's argmax. IndexRangeError, with nothing
    written, if an argmax lies outside its plane."""
    g, dt = _float_input(g, "max_pool2d_grad", "g")
    geo = Geometry(x_shape, kernel_size, kernel_size if stride is None else stride, padding)
    _shaped(g, geo.pooled_shape, "max_pool2d_grad", "g")
    pa = _idx_ptr(argmax, "max_pool2d_grad", g.size)
    out = check_out(out, geo.x_shape, dt, "max_pool2d_grad")
    _disjoint("max_pool2d_grad", g, argmax, out)
    _check(_cfn("max_pool2d_grad", dt)(_ptr(g, dt, "max_pool2d_grad"), pa, _ptr(out, dt, "max_pool2d_grad", True),
                                       geo.cdata()), "max_pool2d_grad")
    return out


def avg_pool2d(x, kernel_size, stride=None, padding=0, out=None):
    """Each window's sum over its real taps / (kh*kw)."""
    x, dt = _float_input(x, "avg_pool2d")
    geo = Geometry(x.shape, kernel_size, kernel_size if stride is None else stride, padding)
    out = check_out(out, geo.pooled_shape, dt, "avg_pool2d")
    _disjoint("avg_pool2d", x, out)
    _check(_cfn("avg_pool2d", dt)(_ptr(x, dt, "avg_pool2d"), _ptr(out, dt, "avg_pool2d", True), geo.cdata()),
           "avg_pool2d")
    return out


def avg_pool2d_grad(g, x_shape, kernel_size, stride=None, padding=0, out=None):
    """dx (x_shape): each g / (kh*kw) added over its window's real taps."""
    g, dt = _float_input(g, "avg_pool2d_grad", "g")
    geo = Geometry(x_shape, kernel_size, kernel_size if stride is None else stride, padding)
    _shaped(g, geo.pooled_shape, "avg_pool2d_grad", "g")
    out = check_out(out, geo.x_shape, dt, "avg_pool2d_grad")
    _disjoint("avg_pool2d_grad", g, out)
    _check(_cfn("avg_pool2d_grad", dt)(_ptr(g, dt, "avg_pool2d_grad"), _ptr(out, dt, "avg_pool2d_grad", True),
                                       geo.cdata()), "avg_pool2d_grad")
    return out

