"""Import rows: MaxPool and AveragePool over 1-, 2- and 3-d windows, with ONNX's pads,
auto_pad, strides, dilations, ceil_mode and count_include_pad.

The common 2-d case (symmetric pads of at most half the kernel, no dilation, no ceil
overhang) is exprvm's own max_pool2d / avg_pool2d op. Every other case is built from
ops that already differentiate: the input padded (-inf for max, 0 for mean), one
strided slice per kernel tap, combined by maximum or summed and divided by a constant
count of the elements each window covers (taps in the padding excluded unless
count_include_pad). The count is separable, so it is the outer product of one count
per axis.
"""
import itertools
import math

import numpy as np

from .. import ops as ev
from .ops_nn import AUTO_PAD, WINDOW_ATTRS, per_axis, window_pads
from .table import REQUIRED, all_of, imports, one_of

POOL_ATTRS = dict(WINDOW_ATTRS, kernel_shape=("ints", REQUIRED), ceil_mode=("i", 0))
MAX_TAPS = 4096      # windows built from taps: one slice node per tap


def _geometry(b, x, at):
    kernel = tuple(at["kernel_shape"])
    nd = len(kernel)
    if len(x.shape) != nd + 2 or any(k < 1 for k in kernel):
        b.fail(f"kernel_shape {kernel} does not fit the input {tuple(x.shape)}")
    strides = per_axis(b, at["strides"], nd, "strides")
    dilations = per_axis(b, at["dilations"], nd, "dilations")
    pairs, out = window_pads(b, at, x.shape[2:], kernel, strides, dilations, bool(at["ceil_mode"]))
    b.limit((x.shape[0], x.shape[1], *out))
    return kernel, strides, dilations, pairs, out


def _native(x, kernel, strides, dilations, pairs, out):
    """Does exprvm's own 2-d pooling op compute exactly this window?"""
    return (len(kernel) == 2 and all(d == 1 for d in dilations) and all(lo == hi for lo, hi in pairs)
            and all(2 * lo <= k for (lo, _), k in zip(pairs, kernel))
            and all((n + 2 * lo - k) // s + 1 == o
                    for n, (lo, _), k, s, o in zip(x.shape[2:], pairs, kernel, strides, out)))


def _taps(b, x, kernel, strides, dilations, pairs, out, fill):
    """The input padded with fill (and at the end as far as ceil_mode's last window
    reaches), then one strided view per kernel tap."""
    if math.prod(kernel) > MAX_TAPS:
        b.refuse(f"a {'x'.join(map(str, kernel))} window outside 2-d pooling without dilation "
                 f"(more than {MAX_TAPS} elements)", "kernel_shape")
    widths = [(0, 0), (0, 0)]
    for n, (lo, hi), k, s, d, o in zip(x.shape[2:], pairs, kernel, strides, dilations, out):
        need = (o - 1) * s + (k - 1) * d + 1
        widths.append((lo, max(hi, need - n - lo)))
    b.limit(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, widths)), "the padded input")
    xp = ev.pad(x, widths, constant_values=fill) if any(w != (0, 0) for w in widths) else x
    for tap in itertools.product(*(range(k) for k in kernel)):
        index = (slice(None), slice(None)) + tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s) for t, s, d, o in zip(tap, strides, dilations, out))
        yield ev.getitem(xp, index)


def _counts(x, kernel, strides, dilations, pairs, out, include_pad):
    """How many elements each window averages: (1, 1, *out), a product of per-axis counts."""
    total = np.ones((1, 1), np.float64)
    for n, (lo, hi), k, s, d, o in zip(x.shape[2:], pairs, kernel, strides, dilations, out):
        first, last = (0, n + lo + hi) if include_pad else (lo, lo + n)   # valid padded coordinates
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d
        axis = ((pos >= first) & (pos < last)).sum(axis=1).astype(np.float64)
        total = total[..., None] * axis
    return total.astype(x.dtype)


@imports("MaxPool", attrs=dict(POOL_ATTRS, storage_order=("i", 0)),
         check=all_of(one_of("auto_pad", AUTO_PAD), one_of("storage_order", (0, 1))),
         notes="the Indices output", fold=False)
def max_pool(b, ins, at):
    x = ins[0]
    kernel, strides, dilations, pairs, out = geo = _geometry(b, x, at)
    if x.dtype.kind != "f":
        b.refuse(f"MaxPool of {x.dtype} values")
    if _native(x, *geo):
        return ev.max_pool2d(x, kernel, strides, tuple(lo for lo, _ in pairs))
    y = None
    for view in _taps(b, x, *geo, fill=-np.inf):
        y = view if y is None else ev.maximum(y, view)
    return y


@imports("AveragePool", attrs=dict(POOL_ATTRS, count_include_pad=("i", 0)),
         check=one_of("auto_pad", AUTO_PAD), fold=False)
def average_pool(b, ins, at):
    x = ins[0]
    kernel, strides, dilations, pairs, out = geo = _geometry(b, x, at)
    include = bool(at["count_include_pad"])
    if _native(x, *geo):
        y = ev.avg_pool2d(x, kernel, strides, tuple(lo for lo, _ in pairs))
        if include or not any(lo for lo, _ in pairs):
            return y
        # avg_pool2d divides by the whole kernel; ONNX's default counts real elements only
        return y * (float(np.prod(kernel)) / _counts(x, *geo, include_pad=False))
    y = None
    for view in _taps(b, x, *geo, fill=0.0):
        y = view if y is None else y + view
    return y / _counts(x, *geo, include_pad=include)
