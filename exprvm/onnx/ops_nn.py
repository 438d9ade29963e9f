"""Import rows: convolution, Gemm, batch / layer / instance normalization and global
pooling, built from exprvm's conv1d / conv2d ops, matmul and its normalization ops."""
import numpy as np

from .. import ops as ev
from .ops_math import broadcast, known, opt
from .table import imports, one_of

AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
WINDOW_ATTRS = {"auto_pad": ("s", "NOTSET"), "dilations": ("ints", None), "kernel_shape": ("ints", None),
                "pads": ("ints", None), "strides": ("ints", None)}


def per_axis(b, values, nd, name, default=1, low=1):
    """An attribute with one int per spatial axis (default when absent)."""
    if values is None:
        return (default,) * nd
    if len(values) != nd or any(v < low for v in values):
        b.fail(f"{name} {values} must be {nd} ints of at least {low}")
    return tuple(values)


def window_pads(b, at, sizes, kernel, strides, dilations, ceil_mode=False):
    """((lo, hi) per spatial axis, output sizes) of a convolution or pooling window by ONNX's
    rules: explicit pads, or auto_pad SAME_UPPER / SAME_LOWER (the odd one at the end /
    the start) / VALID; ceil_mode rounds the output up unless the last window would start
    in the end padding."""
    nd = len(sizes)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    mode = at["auto_pad"]
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // s) for n, s in zip(sizes, strides)]
        total = [max((o - 1) * s + w - n, 0) for o, s, w, n in zip(out, strides, spans, sizes)]
        pairs = [((t // 2, t - t // 2) if mode == "SAME_UPPER" else (t - t // 2, t // 2)) for t in total]
    else:
        pads = at["pads"] if (at["pads"] is not None and mode == "NOTSET") else [0] * 2 * nd
        if len(pads) != 2 * nd or any(p < 0 for p in pads):
            b.fail(f"pads {pads} must be {2 * nd} non-negative ints")
        pairs = [(pads[i], pads[i + nd]) for i in range(nd)]
        out = []
        for n, (lo, hi), w, s in zip(sizes, pairs, spans, strides):
            room = n + lo + hi - w
            o = (-(-room // s) if ceil_mode else room // s) + 1
            if ceil_mode and (o - 1) * s >= n + lo:
                o -= 1
            out.append(o)
    if any(o < 1 for o in out):
        b.fail(f"the window {tuple(kernel)} (dilations {tuple(dilations)}) does not fit the input "
               f"{tuple(sizes)} with pads {pairs}")
    return [tuple(p) for p in pairs], out


@imports("Conv", attrs=dict(WINDOW_ATTRS, group=("i", 1)), fold=False, check=one_of("auto_pad", AUTO_PAD),
         notes="3-d and higher convolutions")
def conv(b, ins, at):
    x, w, bias = ins[0], ins[1], opt(ins, 2)
    nd = len(w.shape) - 2
    if nd not in (1, 2):
        b.refuse(f"a {nd}-d convolution (1-d and 2-d are supported)", "kernel_shape")
    if len(x.shape) != nd + 2:
        b.fail(f"input {tuple(x.shape)} does not fit a {nd}-d convolution")
    kernel = tuple(w.shape[2:])
    if at["kernel_shape"] is not None and tuple(at["kernel_shape"]) != kernel:
        b.fail(f"kernel_shape {at['kernel_shape']} differs from the weight's {kernel}")
    strides = per_axis(b, at["strides"], nd, "strides")
    dilations = per_axis(b, at["dilations"], nd, "dilations")
    pairs, out = window_pads(b, at, x.shape[2:], kernel, strides, dilations)
    b.limit((x.shape[0], w.shape[0], *out))
    y = ev.apply(f"conv{nd}d", b.node(x), b.node(w), stride=strides, padding=tuple(pairs),
                 dilation=dilations, groups=int(at["group"]))
    if bias is None:
        return y
    if tuple(bias.shape) != (w.shape[0],):
        b.fail(f"bias {tuple(bias.shape)} must have one value per output channel ({w.shape[0]})")
    return y + ev.reshape(bias, (1, w.shape[0]) + (1,) * nd)


@imports("Gemm", attrs={"alpha": ("f", 1.0), "beta": ("f", 1.0), "transA": ("i", 0), "transB": ("i", 0)})
def gemm(b, ins, at):
    a, w, c = ins[0], ins[1], opt(ins, 2)
    if len(a.shape) != 2 or len(w.shape) != 2:
        b.fail(f"Gemm needs matrices, got {tuple(a.shape)} and {tuple(w.shape)}")
    a = ev.transpose(a) if at["transA"] else a
    w = ev.transpose(w) if at["transB"] else w
    if a.shape[1] != w.shape[0]:
        b.fail(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(w.shape)}")
    y = ev.matmul(a, w)
    if at["alpha"] != 1.0:
        y = y * at["alpha"]
    if c is None:
        return y
    broadcast(b, y, c)
    return y + (c * at["beta"] if at["beta"] != 1.0 else c)


def _channels(b, x, *vectors):
    if len(x.shape) < 2:
        b.fail(f"input {tuple(x.shape)} must be (N, C, ...)")
    c = x.shape[1]
    for v in vectors:
        if v is not None and tuple(v.shape) != (c,):
            b.fail(f"a per-channel input has shape {tuple(v.shape)}, expected ({c},)")
    return (1, c) + (1,) * (len(x.shape) - 2), (0,) + tuple(range(2, len(x.shape)))


@imports("BatchNormalization", attrs={"epsilon": ("f", 1e-5), "momentum": ("f", 0.9), "training_mode": ("i", 0)},
         outputs=3, fold=False)
def batch_norm(b, ins, at):
    x, scale, bias, mean, var = ins[:5]
    bshape, axes = _channels(b, x, scale, bias, mean, var)
    eps = at["epsilon"]
    if not at["training_mode"]:
        return ev.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)
    # ONNX's training mode: the batch's statistics (variance biased), and the running ones
    # blended with momentum: new = old * momentum + batch * (1 - momentum)
    mu = ev.mean(x, axis=axes)
    batch_var = ev.mean(ev.square(x - ev.reshape(mu, bshape)), axis=axes)
    y = (x - ev.reshape(mu, bshape)) / ev.sqrt(ev.reshape(batch_var, bshape) + eps)
    y = y * ev.reshape(scale, bshape) + ev.reshape(bias, bshape)
    m = at["momentum"]
    return y, mean * m + mu * (1.0 - m), var * m + batch_var * (1.0 - m)


@imports("LayerNormalization", attrs={"axis": ("i", -1), "epsilon": ("f", 1e-5), "stash_type": ("i", 1)},
         outputs=3, fold=False)
def layer_norm(b, ins, at):
    x, scale, bias = ins[0], ins[1], opt(ins, 2)
    r = len(x.shape)
    if not -r <= at["axis"] < r:
        b.fail(f"axis {at['axis']} is out of range for a {r}-d input")
    axis = at["axis"] % r
    ns, axes, eps = tuple(x.shape[axis:]), tuple(range(axis, r)), at["epsilon"]
    if tuple(scale.shape) == ns and (bias is None or tuple(bias.shape) == ns):
        y = ev.layer_norm(x, ns, scale, bias, eps=eps)
    else:    # scale and bias broadcast against the normalized shape
        broadcast(b, x, scale, *([bias] if bias is not None else []))
        y = ev.layer_norm(x, ns, eps=eps) * scale
        y = y if bias is None else y + bias
    if len(b.step.proto.output) < 2:
        return y
    mean = ev.mean(x, axis=axes, keepdims=True)
    inv_std = 1.0 / ev.sqrt(ev.mean(ev.square(x - mean), axis=axes, keepdims=True) + eps)
    return y, mean, inv_std


@imports("InstanceNormalization", attrs={"epsilon": ("f", 1e-5)}, fold=False)
def instance_norm(b, ins, at):
    x, scale, bias = ins
    bshape, _ = _channels(b, x, scale, bias)
    if len(x.shape) < 3:
        b.fail(f"input {tuple(x.shape)} must be (N, C, D1, ...)")
    y = ev.layer_norm(x, tuple(x.shape[2:]), eps=at["epsilon"])
    return y * ev.reshape(scale, bshape) + ev.reshape(bias, bshape)


@imports(("GlobalAveragePool", "GlobalMaxPool"))
def global_pool(b, ins, at):
    x = ins[0]
    if len(x.shape) < 3:
        b.fail(f"input {tuple(x.shape)} must be (N, C, D1, ...)")
    axes = tuple(range(2, len(x.shape)))
    fn = ev.mean if b.step.proto.op_type == "GlobalAveragePool" else ev.max
    y = fn(x, axis=axes, keepdims=True)
    return np.asarray(y) if known(x) else y
