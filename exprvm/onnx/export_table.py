"""The export table: one row per exprvm op with an ONNX form, ``row(e, node, ins) -> name``,
where e is export.Emitter, node the exprvm node (its params, shape, dtype) and ins the
ONNX names of its inputs. Ops with no row (gradients, random draws, ...) are refused."""
import numpy as np

from ..errors import OnnxUnsupportedError
from .proto import ONNX_TYPES

EXPORTS = {}
INT64_MAX, INT64_MIN = 2 ** 63 - 1, -(2 ** 63)


def exports(*names):
    def register(fn):
        for name in names:
            EXPORTS[name] = fn
        return fn
    return register


def _same(onnx_op):
    return lambda e, n, ins: e.add(onnx_op, ins)


for _op, _onnx in {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max",
                   "minimum": "Min", "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
                   "tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "softplus": "Softplus", "sin": "Sin",
                   "cos": "Cos", "erf": "Erf", "sign": "Sign", "floor": "Floor", "ceil": "Ceil",
                   "matmul": "MatMul", "where": "Where", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
                   "ge": "GreaterOrEqual", "eq": "Equal", "stop_gradient": "Identity", "copy": "Identity"}.items():
    EXPORTS[_op] = _same(_onnx)


@exports("ne")
def _ne(e, n, ins):
    return e.add("Not", [e.add("Equal", ins)])


@exports("square")
def _square(e, n, ins):
    return e.add("Mul", [ins[0], ins[0]])


@exports("cube")
def _cube(e, n, ins):
    return e.add("Mul", [e.add("Mul", [ins[0], ins[0]]), ins[0]])


@exports("expm1")
def _expm1(e, n, ins):
    return e.add("Sub", [e.add("Exp", ins), e.like(1, n)])


@exports("log1p")
def _log1p(e, n, ins):
    return e.add("Log", [e.add("Add", [ins[0], e.like(1, n)])])


@exports("log2")
def _log2(e, n, ins):
    return e.add("Div", [e.add("Log", ins), e.like(np.log(2.0), n)])


@exports("round")
def _round(e, n, ins):
    d = n.params["decimals"]
    if d == 0:
        return e.add("Round", ins)
    scale = e.like(10.0 ** d, n)
    return e.add("Div", [e.add("Round", [e.add("Mul", [ins[0], scale])]), scale])


@exports("leaky_relu")
def _leaky(e, n, ins):
    return e.add("LeakyRelu", ins, alpha=float(n.params["alpha"]))


@exports("elu")
def _elu(e, n, ins):
    return e.add("Elu", ins, alpha=float(n.params["alpha"]))


@exports("gelu")
def _gelu(e, n, ins):
    approx = n.params["approximate"]
    if e.opset >= 20:
        return e.add("Gelu", ins, approximate=approx)
    x = ins[0]
    if approx == "none":       # x / 2 * (1 + erf(x / sqrt 2))
        inner = e.add("Erf", [e.add("Div", [x, e.like(np.sqrt(2.0), n)])])
    else:                      # x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))
        cube = e.add("Mul", [e.add("Mul", [x, x]), x])
        arg = e.add("Add", [x, e.add("Mul", [cube, e.like(0.044715, n)])])
        inner = e.add("Tanh", [e.add("Mul", [arg, e.like(np.sqrt(2.0 / np.pi), n)])])
    return e.add("Mul", [e.add("Mul", [x, e.like(0.5, n)]), e.add("Add", [inner, e.like(1, n)])])


@exports("clip")
def _clip(e, n, ins):
    lo, hi = n.params["lo"], n.params["hi"]
    return e.add("Clip", [ins[0], "" if lo is None else e.like(lo, n), "" if hi is None else e.like(hi, n)])


@exports("astype")
def _astype(e, n, ins):
    return e.add("Cast", ins, to=ONNX_TYPES[np.dtype(n.params["dtype"])])


# -- shapes -----------------------------------------------------------------------------------

@exports("reshape")
def _reshape(e, n, ins):
    return e.add("Reshape", [ins[0], e.const(n.params["shape"])])


@exports("transpose")
def _transpose(e, n, ins):
    return e.add("Transpose", ins, perm=list(n.params["axes"]))


@exports("broadcast_to")
def _broadcast(e, n, ins):
    return e.add("Expand", [ins[0], e.const(n.params["shape"])])


@exports("concat")
def _concat(e, n, ins):
    return e.add("Concat", ins, axis=n.params["axis"])


@exports("stack")
def _stack(e, n, ins):
    axis = e.const([n.params["axis"]])
    return e.add("Concat", [e.add("Unsqueeze", [i, axis]) for i in ins], axis=n.params["axis"])


@exports("outer")
def _outer(e, n, ins):
    return e.add("Mul", [e.add("Unsqueeze", [ins[0], e.const([1])]), e.add("Unsqueeze", [ins[1], e.const([0])])])


@exports("take")
def _take(e, n, ins):
    return e.add("Gather", ins, axis=n.params["axis"])


@exports("getitem")
def _getitem(e, n, ins):
    """numpy's basic indexing: slices as one Slice, ints as Squeeze, None as Unsqueeze;
    one array index as Gather."""
    x = n.inputs[0]
    index = n.params["index"]
    arrays = [k for k, i in enumerate(index) if isinstance(i, np.ndarray)]
    if arrays:
        k = arrays[0]
        if len(arrays) > 1 or any(i is Ellipsis or i is None for i in index) or \
                any(i != slice(None) for i in index[:k]):
            raise OnnxUnsupportedError(f"ev.onnx.export: the index {index!r} of {n.label} (made at {n.site})")
        gathered = e.add("Gather", [ins[0], e.const(index[k])], axis=k)
        rest = (slice(None),) * (k + index[k].ndim) + tuple(index[k + 1:])
        return _basic(e, gathered, rest, x.ndim - 1 + index[k].ndim)
    return _basic(e, ins[0], index, x.ndim)


def _basic(e, name, index, ndim):
    if Ellipsis in index:
        k = index.index(Ellipsis)
        fill = ndim - sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:k] + (slice(None),) * fill + index[k + 1:]
    index = tuple(index) + (slice(None),) * (ndim - sum(1 for i in index if i is not None))
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = out = 0
    for i in index:
        if i is None:
            unsqueeze.append(out)
            out += 1
            continue
        if isinstance(i, slice):
            if i != slice(None):
                step = 1 if i.step is None else i.step
                lo = i.start if i.start is not None else (0 if step > 0 else INT64_MAX)
                hi = i.stop if i.stop is not None else (INT64_MAX if step > 0 else INT64_MIN)
                starts, ends, axes, steps = starts + [lo], ends + [hi], axes + [axis], steps + [step]
            out += 1
        else:
            stop = INT64_MAX if int(i) == -1 else int(i) + 1     # x[-1] is x[-1:]
            starts, ends, axes, steps = starts + [int(i)], ends + [stop], axes + [axis], steps + [1]
            squeeze.append(axis)
        axis += 1
    if axes:
        name = e.add("Slice", [name, e.const(starts), e.const(ends), e.const(axes), e.const(steps)])
    if squeeze:
        name = e.add("Squeeze", [name, e.const(squeeze)])
    if unsqueeze:
        name = e.add("Unsqueeze", [name, e.const(unsqueeze)])
    return name if (axes or squeeze or unsqueeze) else e.add("Identity", [name])


@exports("pad")
def _pad(e, n, ins):
    mode = {"constant": "constant", "edge": "edge", "reflect": "reflect", "wrap": "wrap"}.get(n.params["mode"])
    if mode is None or (mode == "wrap" and e.opset < 19):
        raise OnnxUnsupportedError(f"ev.onnx.export: pad mode {n.params['mode']!r} of {n.label} at opset {e.opset}")
    widths = n.params["pad_width"]
    pads = e.const([lo for lo, _ in widths] + [hi for _, hi in widths])
    return e.add("Pad", [ins[0], pads, e.like(n.params["value"], n)], mode=mode)


# -- reductions and neural ops ---------------------------------------------------------------

def reduce(e, onnx_op, x, axes, keepdims):
    if onnx_op == "ReduceSum" or e.opset >= 18:
        return e.add(onnx_op, [x, e.const(list(axes))], keepdims=int(keepdims))
    return e.add(onnx_op, [x], axes=list(axes), keepdims=int(keepdims))


for _op, _onnx in {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
                   "logsumexp": "ReduceLogSumExp"}.items():
    EXPORTS[_op] = (lambda o: lambda e, n, ins: reduce(e, o, ins[0], n.params["axis"], n.params["keepdims"]))(_onnx)


@exports("var", "std")
def _var(e, n, ins):
    axes, ddof = n.params["axis"], n.params["ddof"]
    count = int(np.prod([n.inputs[0].shape[a] for a in axes]))
    xc = e.add("Sub", [ins[0], reduce(e, "ReduceMean", ins[0], axes, True)])
    v = reduce(e, "ReduceSum", e.add("Mul", [xc, xc]), axes, n.params["keepdims"])
    v = e.add("Div", [v, e.like(count - ddof, n)])
    return e.add("Sqrt", [v]) if n.op == "std" else v


@exports("argmax", "argmin")
def _arg(e, n, ins):
    x = ins[0]
    axis = n.params["axis"]
    if axis is None:
        x, axis = e.add("Reshape", [x, e.const([-1])]), 0
    y = e.add("ArgMax" if n.op == "argmax" else "ArgMin", [x], axis=axis, keepdims=int(n.params["keepdims"]))
    if n.params["axis"] is None and n.params["keepdims"]:
        y = e.add("Reshape", [y, e.const(n.shape)])
    return y


@exports("softmax", "log_softmax")
def _softmax(e, n, ins):
    return e.add("Softmax" if n.op == "softmax" else "LogSoftmax", ins, axis=n.params["axis"])


def _hits(e, ids, depth):
    """Equal(ids[..., None], 0..depth-1): a one-hot mask every runtime computes for every
    index type (onnxruntime's OneHot lacks int32 indices; exprvm imports no GatherElements)."""
    ids = e.add("Unsqueeze", [e.add("Cast", [ids], to=ONNX_TYPES[np.dtype(np.int64)]), e.const([-1])])
    return e.add("Equal", [ids, e.const(np.arange(depth))])


@exports("cross_entropy")
def _cross_entropy(e, n, ins):
    logp = e.add("LogSoftmax", [ins[0]], axis=-1)
    picked = e.add("Where", [_hits(e, ins[1], n.inputs[0].shape[-1]), logp, e.like(0, n)])
    return e.add("Neg", [reduce(e, "ReduceSum", picked, [-1], False)])


@exports("one_hot")
def _one_hot(e, n, ins):
    return e.add("Cast", [_hits(e, ins[0], n.params["depth"])], to=ONNX_TYPES[np.dtype(n.params["dtype"])])


@exports("conv1d", "conv2d")
def _conv(e, n, ins):
    p = n.params
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    return e.add("Conv", ins, strides=list(p["stride"]), pads=pads, dilations=list(p["dilation"]),
                 group=p["groups"])


@exports("max_pool2d", "avg_pool2d")
def _pool(e, n, ins):
    p = n.params
    kw = dict(kernel_shape=list(p["kernel_size"]), strides=list(p["stride"]), pads=list(p["padding"]) * 2)
    if n.op == "max_pool2d":
        return e.add("MaxPool", ins, **kw)
    return e.add("AveragePool", ins, count_include_pad=1, **kw)


@exports("batch_norm", "layer_norm")
def _normalize(e, n, ins):
    axes, eps = n.params["axes"], n.params["eps"]
    if n.op == "layer_norm" and e.opset >= 17:
        ones = e.initializer(np.ones(n.shape[axes[0]:], n.dtype), e.fresh("ones"))
        return e.add("LayerNormalization", [ins[0], ones], axis=axes[0], epsilon=float(eps))
    xc = e.add("Sub", [ins[0], reduce(e, "ReduceMean", ins[0], axes, True)])
    var = reduce(e, "ReduceMean", e.add("Mul", [xc, xc]), axes, True)
    return e.add("Div", [xc, e.add("Sqrt", [e.add("Add", [var, e.like(eps, n)])])])


@exports("einsum")
def _einsum(e, n, ins):
    return e.add("Einsum", ins, equation=n.params["subscripts"])
