"""Convolutions, named and laid out as torch.nn.functional: conv1d (NCL input, OIL
weights) and conv2d (NCHW, OIHW), with stride, zero padding (an int, one per axis,
"same" or "valid"), dilation and groups.

Each convolution is three ops that differentiate into one another, so gradients of
gradients are ops too: with y = conv(x, w),

    dx = conv_grad_input(g, w)     <dx, h> = <g, conv(h, w)>
    dw = conv_grad_weight(x, g)    <dw, v> = <g, conv(x, v)>

and each of the three is bilinear, so the VJPs of the gradient ops are again
conv, conv_grad_input and conv_grad_weight (see _vjps). The numpy impls build
windows as strided views of the padded input and contract them with tensordot;
each row's `ref` is the definition written as loops.

Geometry params, as the nodes store them: stride and dilation are tuples with one
int per spatial axis, padding a tuple of (before, after) pairs (asymmetric only for
"same" with an even span, where the extra zero goes after, as in torch).
"""
import numpy as np

from ..core import Node, Row, apply, defop, operands, same_float_dtype, shape_of, user_site
from ..errors import ShapeError

_as_strided = np.lib.stride_tricks.as_strided


# -- geometry shared with pooling and the kernels -------------------------------------

def param_error(op, msg, *xs):
    """A ShapeError for bad conv/pool arguments, worded as build-time errors are."""
    nodes = [x for x in xs if isinstance(x, Node)]
    where = f"\n  operands: {operands(nodes)}" if nodes else ""
    return ShapeError(f"{op}: {msg}{where}\n  built at {user_site()}")


def ints(value, n, what, op, low=1):
    """An int or n ints (each >= low) as a tuple of n ints."""
    vals = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(vals) != n or not all(isinstance(v, (int, np.integer)) for v in vals):
        raise param_error(op, f"{what} must be an int or {n} ints, got {value!r}")
    if any(v < low for v in vals):
        raise param_error(op, f"{what} must be >= {low}, got {value!r}")
    return tuple(int(v) for v in vals)


def out_size(size, k, s, pad, d):
    """Output length of one axis: windows of span d*(k-1)+1 every s over the padded size."""
    return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def check_fits(spatial, kernel, stride, padding, dilation):
    """Output sizes; ShapeError when a (dilated) kernel is larger than the padded input."""
    out = []
    for i, (n, k, s, p, d) in enumerate(zip(spatial, kernel, stride, padding, dilation)):
        span, padded = d * (k - 1) + 1, n + p[0] + p[1]
        if padded < span:
            raise ShapeError(f"kernel {k} (dilation {d}, spanning {span}) is larger than the "
                             f"padded input {padded} (size {n} + padding {p[0]}+{p[1]}) on spatial axis {i}")
        out.append(out_size(n, k, s, p, d))
    return tuple(out)


def pad(x, padding, fill=0.0):
    """x (N, C, *spatial) with (before, after) `padding` per spatial axis set to fill."""
    shape = x.shape[:2] + tuple(n + p[0] + p[1] for n, p in zip(x.shape[2:], padding))
    if shape == x.shape:
        return x
    xp = np.full(shape, fill, dtype=x.dtype)
    xp[interior(x.shape[2:], padding)] = x
    return xp


def interior(spatial, padding):
    """Index of the unpadded part of a padded (N, C, *spatial) array."""
    return (slice(None), slice(None)) + tuple(slice(p[0], p[0] + n) for n, p in zip(spatial, padding))


def windows(xp, kernel, stride, dilation, out):
    """A read-only (N, C, *out, *kernel) view of padded xp: element [n, c, *o, *k] is
    xp[n, c, o*stride + k*dilation] (no copy)."""
    st = xp.strides
    sp = st[2:]
    return _as_strided(xp, xp.shape[:2] + tuple(out) + tuple(kernel),
                       st[:2] + tuple(a * s for a, s in zip(sp, stride)) + tuple(a * d for a, d in zip(sp, dilation)),
                       writeable=False)


def _spatial_axes(nd, first):
    return list(range(first, first + nd))


# -- numpy impls ------------------------------------------------------------------------

def _conv(x, w, stride, padding, dilation, groups):
    x, w = np.asarray(x), np.asarray(w)
    nd = len(stride)
    out = tuple(out_size(n, k, s, p, d) for n, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation))
    win = windows(pad(x, padding), w.shape[2:], stride, dilation, out)     # (N, C, *o, *k)
    cg, og = w.shape[1], w.shape[0] // groups
    axes = ([1] + _spatial_axes(nd, 2 + nd), [1] + _spatial_axes(nd, 2))
    parts = [np.tensordot(win[:, j * cg:(j + 1) * cg], w[j * og:(j + 1) * og], axes=axes)  # (N, *o, og)
             for j in range(groups)]
    y = parts[0] if groups == 1 else np.concatenate(parts, axis=-1)
    return np.ascontiguousarray(np.moveaxis(y, -1, 1))


def _conv_grad_input(g, w, in_size, stride, padding, dilation, groups):
    g, w = np.asarray(g), np.asarray(w)
    nd, out, kernel = len(stride), g.shape[2:], w.shape[2:]
    cg, og = w.shape[1], w.shape[0] // groups
    parts = [np.tensordot(g[:, j * og:(j + 1) * og], w[j * og:(j + 1) * og], axes=([1], [0]))  # (N, *o, cg, *k)
             for j in range(groups)]
    cols = parts[0] if groups == 1 else np.concatenate(parts, axis=1 + nd)
    padded = tuple(n + p[0] + p[1] for n, p in zip(in_size, padding))
    dxp = np.zeros((g.shape[0], cg * groups) + padded, dtype=g.dtype)
    # NOTE: windows overlap, so the scatter goes one kernel offset at a time (each
    # offset's positions are distinct); a += through an overlapping view would drop sums.
    for k in np.ndindex(*kernel):
        at = tuple(slice(k[i] * dilation[i], k[i] * dilation[i] + stride[i] * (out[i] - 1) + 1, stride[i])
                   for i in range(nd))
        dxp[(slice(None), slice(None)) + at] += np.moveaxis(cols[(Ellipsis,) + k], -1, 1)
    return np.ascontiguousarray(dxp[interior(in_size, padding)])


def _conv_grad_weight(x, g, kernel_size, stride, padding, dilation, groups):
    x, g = np.asarray(x), np.asarray(g)
    nd = len(stride)
    win = windows(pad(x, padding), kernel_size, stride, dilation, g.shape[2:])   # (N, C, *o, *k)
    cg, og = x.shape[1] // groups, g.shape[1] // groups
    axes = [0] + _spatial_axes(nd, 2)
    parts = [np.tensordot(g[:, j * og:(j + 1) * og], win[:, j * cg:(j + 1) * cg], axes=(axes, axes))
             for j in range(groups)]                                              # (og, cg, *k)
    return parts[0] if groups == 1 else np.concatenate(parts, axis=0)


# -- shape rules -----------------------------------------------------------------------

def _layout(nd):
    return ("NCL", "OIL") if nd == 1 else ("NCHW", "OIHW")


def _channels(x_channels, out_channels, groups, w_in=None):
    if x_channels % groups:
        raise ShapeError(f"{x_channels} input channels are not divisible by groups={groups}")
    if out_channels % groups:
        raise ShapeError(f"{out_channels} output channels are not divisible by groups={groups}")
    if w_in is not None and w_in * groups != x_channels:
        raise ShapeError(f"the weight takes {w_in} channels per group ({w_in * groups} with "
                         f"groups={groups}), the input has {x_channels}")


def _ranks(nd, **named):
    for what, n in named.items():
        if n.ndim != nd + 2:
            xl, wl = _layout(nd)
            lay = wl if what == "weight" else xl
            raise ShapeError(f"{what} must be {nd + 2}-d ({lay}), got shape {n.shape}")


def _conv_rule(x, w, stride, padding, dilation, groups):
    dt = same_float_dtype(x, w)
    nd = len(stride)
    _ranks(nd, input=x, weight=w)
    _channels(x.shape[1], w.shape[0], groups, w.shape[1])
    out = check_fits(x.shape[2:], w.shape[2:], stride, padding, dilation)
    return (x.shape[0], w.shape[0]) + out, dt


def _grad_input_rule(g, w, in_size, stride, padding, dilation, groups):
    dt = same_float_dtype(g, w)
    nd = len(stride)
    _ranks(nd, gradient=g, weight=w)
    _channels(w.shape[1] * groups, w.shape[0], groups)
    out = check_fits(in_size, w.shape[2:], stride, padding, dilation)
    if g.shape[1] != w.shape[0] or g.shape[2:] != out:
        raise ShapeError(f"the gradient {g.shape} does not match the output {(g.shape[0], w.shape[0]) + out} "
                         f"of an input of size {in_size}")
    return (g.shape[0], w.shape[1] * groups) + tuple(in_size), dt


def _grad_weight_rule(x, g, kernel_size, stride, padding, dilation, groups):
    dt = same_float_dtype(x, g)
    nd = len(stride)
    _ranks(nd, input=x, gradient=g)
    _channels(x.shape[1], g.shape[1], groups)
    out = check_fits(x.shape[2:], kernel_size, stride, padding, dilation)
    if g.shape[0] != x.shape[0] or g.shape[2:] != out:
        raise ShapeError(f"the gradient {g.shape} does not match the output {(x.shape[0], g.shape[1]) + out}")
    return (g.shape[1], x.shape[1] // groups) + tuple(kernel_size), dt


# -- naive references for the op table: the definitions as loops -----------------------

def naive_windows(padded, span, stride):
    """How many windows `span` long, one starting every `stride`, fit in `padded`
    positions, counted one by one: the naive references' own size arithmetic, apart
    from out_size's formula that the ops use."""
    count, start = 0, 0
    while start + span <= padded:
        count, start = count + 1, start + stride
    return count


def _naive_out(x_shape, kernel, stride, padding, dilation):
    return tuple(naive_windows(n + p[0] + p[1], d * (k - 1) + 1, s)
                 for n, k, s, p, d in zip(x_shape[2:], kernel, stride, padding, dilation))


def _taps(x_shape, w_shape, out, stride, padding, dilation, groups):
    """(n, oc, pos, channels, window) for every output element: channels is the slice of
    input channels oc reads, window the index of its taps in the padded input."""
    nd, og, cg = len(stride), w_shape[0] // groups, w_shape[1]
    for n, oc, *pos in np.ndindex(x_shape[0], w_shape[0], *out):
        window = tuple(slice(pos[i] * stride[i], pos[i] * stride[i] + dilation[i] * (w_shape[2 + i] - 1) + 1,
                             dilation[i]) for i in range(nd))
        j = oc // og
        yield n, oc, tuple(pos), slice(j * cg, (j + 1) * cg), window


def _padded_zeros(x_shape, padding, dtype):
    return np.zeros(tuple(x_shape[:2]) + tuple(n + p[0] + p[1] for n, p in zip(x_shape[2:], padding)), dtype)


def naive_conv(x, w, stride, padding, dilation, groups):
    xp = _padded_zeros(x.shape, padding, x.dtype)
    xp[interior(x.shape[2:], padding)] = x
    out = _naive_out(x.shape, w.shape[2:], stride, padding, dilation)
    y = np.zeros((x.shape[0], w.shape[0]) + out)
    for n, oc, pos, ch, window in _taps(x.shape, w.shape, out, stride, padding, dilation, groups):
        y[(n, oc) + pos] = np.sum(xp[(n, ch) + window] * w[oc])
    return y


def naive_conv_grad_input(g, w, in_size, stride, padding, dilation, groups):
    x_shape = (g.shape[0], w.shape[1] * groups) + tuple(in_size)
    dxp = _padded_zeros(x_shape, padding, np.float64)
    for n, oc, pos, ch, window in _taps(x_shape, w.shape, g.shape[2:], stride, padding, dilation, groups):
        dxp[(n, ch) + window] += g[(n, oc) + pos] * w[oc]
    return dxp[interior(in_size, padding)]


def naive_conv_grad_weight(x, g, kernel_size, stride, padding, dilation, groups):
    w_shape = (g.shape[1], x.shape[1] // groups) + tuple(kernel_size)
    xp = _padded_zeros(x.shape, padding, np.float64)
    xp[interior(x.shape[2:], padding)] = x
    dw = np.zeros(w_shape)
    for n, oc, pos, ch, window in _taps(x.shape, w_shape, g.shape[2:], stride, padding, dilation, groups):
        dw[oc] += g[(n, oc) + pos] * xp[(n, ch) + window]
    return dw


# -- the ops ---------------------------------------------------------------------------

def _vjps(name):
    """VJPs of conv, conv_grad_input and conv_grad_weight (all bilinear)."""
    conv, gi, gw = name, name + "_grad_input", name + "_grad_weight"
    return {
        conv: (lambda g, ans, x, w, **p: apply(gi, g, w, in_size=tuple(x.shape[2:]), **p),
               lambda g, ans, x, w, **p: apply(gw, x, g, kernel_size=tuple(w.shape[2:]), **p)),
        gi: (lambda h, ans, g, w, in_size, **p: apply(conv, h, w, **p),
             lambda h, ans, g, w, in_size, **p: apply(gw, h, g, kernel_size=tuple(w.shape[2:]), **p)),
        gw: (lambda v, ans, x, g, kernel_size, **p: apply(gi, g, v, in_size=tuple(x.shape[2:]), **p),
             lambda v, ans, x, g, kernel_size, **p: apply(conv, x, v, **p)),
    }


def _register(nd, name, x_shape, w_shape, geo):
    vjps = _vjps(name)
    out = tuple(out_size(n, k, s, p, d) for n, k, s, p, d in
                zip(x_shape[2:], w_shape[2:], geo["stride"], geo["padding"], geo["dilation"]))
    g_shape = (x_shape[0], w_shape[0]) + out
    f = lambda shape: ("f", shape, -1.0, 1.0)  # noqa: E731
    defop(name, _conv, _conv_rule, vjp=vjps[name],
          row=Row((f(x_shape), f(w_shape)), dict(geo), ref=naive_conv),
          doc=f"{nd}-d convolution (cross-correlation, as torch): x {_layout(nd)[0]}, w {_layout(nd)[1]}")
    defop(name + "_grad_input", _conv_grad_input, _grad_input_rule, vjp=vjps[name + "_grad_input"],
          row=Row((f(g_shape), f(w_shape)), dict(geo, in_size=tuple(x_shape[2:])), ref=naive_conv_grad_input),
          doc=f"gradient of {name} with respect to its input, given the output's gradient")
    defop(name + "_grad_weight", _conv_grad_weight, _grad_weight_rule, vjp=vjps[name + "_grad_weight"],
          row=Row((f(x_shape), f(g_shape)), dict(geo, kernel_size=tuple(w_shape[2:])),
                  ref=naive_conv_grad_weight),
          doc=f"gradient of {name} with respect to its weight, given the output's gradient")


# Rows: odd sizes, a stride that leaves a row over, asymmetric padding, dilation, groups.
_register(1, "conv1d", (2, 4, 9), (4, 1, 3),
          dict(stride=(2,), padding=((2, 1),), dilation=(2,), groups=4))
_register(2, "conv2d", (2, 4, 6, 6), (6, 2, 3, 2),
          dict(stride=(2, 1), padding=((1, 1), (0, 1)), dilation=(1, 2), groups=2))


# -- user functions --------------------------------------------------------------------

def conv_params(op, nd, kernel, stride, padding, dilation, *xs):
    """(stride, padding pairs, dilation) as the ops store them, from torch-style arguments."""
    stride = ints(stride, nd, "stride", op)
    dilation = ints(dilation, nd, "dilation", op)
    if isinstance(padding, str):
        if padding == "valid":
            pairs = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise param_error(op, f"padding='same' needs stride 1, got stride={stride}", *xs)
            spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
            pairs = tuple((t // 2, t - t // 2) for t in spans)
        else:
            raise param_error(op, f"padding must be an int, {nd} ints, 'same' or 'valid', got {padding!r}", *xs)
    else:
        pairs = tuple((p, p) for p in ints(padding, nd, "padding", op, low=0))
    return stride, pairs, dilation


def _conv_fn(nd, name):
    def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        w_shape = shape_of(weight)
        if len(w_shape) != nd + 2:
            raise param_error(name, f"weight must be {nd + 2}-d ({_layout(nd)[1]}), got shape {w_shape}", x, weight)
        if not isinstance(groups, (int, np.integer)) or groups < 1:
            raise param_error(name, f"groups must be a positive int, got {groups!r}", x, weight)
        stride, pairs, dilation = conv_params(name, nd, w_shape[2:], stride, padding, dilation, x, weight)
        y = apply(name, x, weight, stride=stride, padding=pairs, dilation=dilation, groups=int(groups))
        if bias is None:
            return y
        if tuple(shape_of(bias)) != (w_shape[0],):
            raise param_error(name, f"bias must have shape ({w_shape[0]},) (one per output channel), "
                                    f"got {tuple(shape_of(bias))}", x, weight, bias)
        return y + reshape(bias, (1, w_shape[0]) + (1,) * nd)

    conv.__name__ = conv.__qualname__ = name
    conv.__doc__ = f"""{nd}-d convolution, as ``torch.nn.functional.{name}``.

    Parameters
    ----------
    x : Node or array
        The input, {_layout(nd)[0]}.
    weight : Node or array
        {_layout(nd)[1]}: ``(out_channels, in_channels / groups) + kernel``.
    bias : Node or array, optional
        ``(out_channels,)``.
    stride, dilation : int or tuple of int, default 1
        One for every spatial axis, or one per axis.
    padding : int, tuple of int, "valid" or "same", default 0
        Zeros on both sides of each spatial axis; "same" (stride 1) pads so the output
        keeps the input's size (an odd total puts the extra zero after, as torch).
    groups : int, default 1
        Input and output channels split into this many independent groups.

    Returns
    -------
    Node or array
        ``(N, out_channels) + out``, a node when any operand is a node.

    Raises
    ------
    ShapeError
        If the geometry does not fit (a kernel larger than the padded input, channels
        not divisible by groups, ...), naming the shapes and the line that built it.
    """
    return conv


conv1d = _conv_fn(1, "conv1d")
conv2d = _conv_fn(2, "conv2d")

from .shape import reshape  # noqa: E402
