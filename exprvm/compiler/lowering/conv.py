"""Lowering rows of convolution, pooling and normalization (ops/conv.py, ops/pool.py,
ops/normalization.py), numpy and C next to each other.

On the C backend in float32 (with the 512-bit build of csrc/ev_gemm.c) a
convolution and its gradients are one C call each, a sample at a time with
exprvm's own matrix product (csrc/ev_conv_gemm.c; at stride 1 no im2col at all),
over one planned work buffer. Otherwise they run as im2col into a planned scratch
buffer, then one batched GEMM (numpy matmul with out=, so BLAS) straight into the
output; their gradients as a GEMM then col2im (input) or im2col then a GEMM and a
sum over the batch (weight). The C rows use csrc/ev_conv.c for im2col / col2im and
for pooling; the numpy rows do the same with strided views over a padded scratch
copy. conv1d runs as conv2d
over a height of 1 (views). The runners themselves are exprvm.kernels.conv_bind's
bind_* (all checks and pointers taken when the program is bound).

Not here, so they run their numpy impl (allocating): max_pool2d_select, and on
the numpy backend max_pool2d_grad and avg_pool2d_grad.
"""
import math

import numpy as np

from ...core import FLOAT_DTYPES
from ...kernels import conv as kconv
from ...kernels import conv_bind
from .kernel_calls import contiguous
from .table import Lowered, lowers


def _four_d(shape):
    return tuple(shape) if len(shape) == 4 else tuple(shape[:2]) + (1,) + tuple(shape[2:])


def _geometry(req, x_shape, kernel):
    """The 2-d Geometry of the op's input x_shape (a 1-d op gets a height of 1)."""
    p = req.params
    if len(p["stride"]) == 1:
        return kconv.Geometry(_four_d(x_shape), (1,) + tuple(kernel), (1,) + p["stride"],
                              ((0, 0),) + p["padding"], (1,) + p["dilation"])
    return kconv.Geometry(x_shape, kernel, p["stride"], p["padding"], p["dilation"])


def _usable(req, backend):
    """May this instruction bind a runner of `backend`: float operands of the output's
    dtype, contiguous, on the host (and, for C, an extension with the conv kernels)?"""
    if req.dtype not in FLOAT_DTYPES or req.device != "cpu" or req.nbytes == 0:
        return False
    if any(d != req.dtype for d in req.in_dtypes) or not all(contiguous(f) for f in req.layouts):
        return False
    return backend != "c" or kconv.available()


def _conv_row(which, backend):
    def row(req):
        if not _usable(req, backend):
            return None
        groups = req.params["groups"]
        if which == "forward":
            x_shape, w_shape = req.in_shapes
            kernel, bind = w_shape[2:], conv_bind.bind_conv
        elif which == "grad_input":
            g_shape, w_shape = req.in_shapes
            x_shape = tuple(g_shape[:1]) + (w_shape[1] * groups,) + tuple(req.params["in_size"])
            kernel, bind = w_shape[2:], conv_bind.bind_conv_grad_input
        else:
            x_shape, g_shape = req.in_shapes
            kernel, bind = req.params["kernel_size"], conv_bind.bind_conv_grad_weight
        out_channels = w_shape[0] if which != "grad_weight" else g_shape[1]
        geo = _geometry(req, x_shape, kernel)
        tmps = conv_bind.conv_tmps(which, backend, geo, groups, out_channels, req.dtype)

        def build(ins, out, tmps):
            a, b = (x.reshape(_four_d(x.shape)) for x in ins)
            return bind(backend, a, b, out.reshape(_four_d(out.shape)), tmps, geo, groups)
        return Lowered(build, tmps=tmps, kernel=backend, flattens=(0, 1) if len(req.params["stride"]) == 1 else ())
    return row


for _name in ("conv1d", "conv2d"):
    for _which, _suffix in (("forward", ""), ("grad_input", "_grad_input"), ("grad_weight", "_grad_weight")):
        lowers(_name + _suffix)(_conv_row(_which, "numpy"))
        lowers(_name + _suffix, "c")(_conv_row(_which, "c"))


# -- pooling ----------------------------------------------------------------------------

def _pool_geometry(req, x_shape):
    p = req.params
    return kconv.Geometry(x_shape, p["kernel_size"], p["stride"], p["padding"])


def _pool_row(op, backend):
    def row(req):
        if not _usable(req, backend):
            return None
        if op == "avg_pool2d_grad":
            geo = _pool_geometry(req, tuple(req.in_shapes[0][:2]) + tuple(req.params["in_size"]))
        else:
            geo = _pool_geometry(req, req.in_shapes[-1])
        if op == "max_pool2d_grad":
            tmps = ((geo.pooled_shape, np.dtype(np.int64)),)
        elif backend == "numpy":
            tmps = ((geo.padded_shape, req.dtype),)
        else:
            tmps = ()
        bind = getattr(conv_bind, "bind_" + op)

        def build(ins, out, tmps):
            return bind(backend, *ins, out, tmps, geo)
        return Lowered(build, tmps=tmps, kernel=backend)
    return row


for _op in ("max_pool2d", "avg_pool2d"):
    lowers(_op)(_pool_row(_op, "numpy"))
for _op in ("max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad"):
    lowers(_op, "c")(_pool_row(_op, "c"))


# -- normalization ----------------------------------------------------------------------

def _normalize_row(req):
    """(x - mean) / sqrt(var + eps) over the op's axes, in out= calls over planned scratch."""
    if req.dtype not in FLOAT_DTYPES or req.device != "cpu":
        return None
    axes, eps = req.params["axes"], req.params["eps"]
    shape = req.shape
    keep = tuple(1 if i in axes else s for i, s in enumerate(shape))
    inv_count = 1.0 / math.prod([shape[a] for a in axes])

    def run(x, out, m, v, sq):
        np.add.reduce(x, axes, None, m, True)
        np.multiply(m, inv_count, m)
        np.subtract(x, m, out)
        np.multiply(out, out, sq)
        np.add.reduce(sq, axes, None, v, True)
        np.multiply(v, inv_count, v)
        np.add(v, eps, v)
        np.sqrt(v, v)
        np.divide(out, v, out)
    return Lowered(lambda ins, out, tmps: (run, (ins[0], out, *tmps)),
                   tmps=((keep, req.dtype), (keep, req.dtype), (shape, req.dtype)), inplace=(0,))


lowers("batch_norm")(_normalize_row)
lowers("layer_norm")(_normalize_row)
