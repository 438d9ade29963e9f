"""Import rows: elementwise arithmetic, activations, comparisons, casts, reductions,
softmax and matrix products.

Each handler is written with exprvm's own functions, which build nodes when given nodes
and evaluate numpy when every operand is an array; so one handler serves a value known
at import time (folded) and a node alike. Integer arithmetic is folded only: at run time
exprvm's arithmetic is float (a DTypeError becomes OnnxUnsupportedError).
"""
import numpy as np

from .. import ops as ev
from ..core import Node
from .proto import DTYPES, type_name
from .table import REQUIRED, imports, one_of

NOTE_INT = "integer arithmetic on values computed at run time"


def opt(ins, i):
    """Input i, or None when the node leaves it out."""
    return ins[i] if i < len(ins) else None


def known(*vals):
    """Are all these values known at import time (arrays, not nodes)?"""
    return not any(isinstance(v, Node) for v in vals)


_NUMPY = {ev.add: np.add, ev.subtract: np.subtract, ev.multiply: np.multiply, ev.divide: np.true_divide,
          ev.power: np.power, ev.maximum: np.maximum, ev.minimum: np.minimum, ev.negative: np.negative,
          ev.abs: np.abs, ev.sign: np.sign, ev.equal: np.equal, ev.less: np.less, ev.less_equal: np.less_equal,
          ev.greater: np.greater, ev.greater_equal: np.greater_equal, ev.sum: np.sum, ev.mean: np.mean,
          ev.max: np.max, ev.min: np.min}


def call(fn, *args, **kw):
    """fn(*args): numpy's own function when every operand is known at import (exprvm's
    eager rules refuse integer arithmetic, which shape computations are), else fn's node."""
    if known(*args) and fn in _NUMPY:
        return _NUMPY[fn](*(np.asarray(a) for a in args), **kw)
    return fn(*args, **kw)


def broadcast(b, *vals):
    """The broadcast shape of the operands, refused when they do not broadcast or it is too big."""
    return broadcast_shapes(b, *(tuple(v.shape) for v in vals))


def broadcast_shapes(b, *shapes):
    try:
        shape = np.broadcast_shapes(*shapes)
    except ValueError:
        b.fail("operands do not broadcast: " + " and ".join(str(s) for s in shapes))
    return b.limit(shape)


# -- binary arithmetic ---------------------------------------------------------------------

def _trunc_divide(x, y):
    """ONNX's integer Div: the quotient truncated toward zero (numpy's // floors)."""
    q = np.abs(x) // np.abs(y)
    return np.where((x < 0) != (y < 0), -q, q).astype(np.result_type(x, y))


_ARITH = {"Add": ev.add, "Sub": ev.subtract, "Mul": ev.multiply, "Div": ev.divide}


@imports(("Add", "Sub", "Mul", "Div"), notes=NOTE_INT)
def arith(b, ins, at):
    x, y = ins
    broadcast(b, x, y)
    op = b.step.proto.op_type
    if op == "Div" and known(x, y) and np.asarray(x).dtype.kind in "iu":
        if np.any(np.asarray(y) == 0):
            b.fail("integer division by zero")
        return _trunc_divide(np.asarray(x), np.asarray(y))
    return call(_ARITH[op], x, y)


@imports("Pow")
def pow_(b, ins, at):
    x, y = ins
    broadcast(b, x, y)
    if y.dtype != x.dtype:    # ONNX lets the exponent have its own type
        y = np.asarray(y).astype(x.dtype) if known(y) else ev.astype(y, x.dtype)
    return call(ev.power, x, y)


@imports(("Max", "Min", "Sum", "Mean"))
def variadic(b, ins, at):
    xs = [v for v in ins if v is not None]
    if not xs:
        b.fail("needs at least one input")
    broadcast(b, *xs)
    op = b.step.proto.op_type
    fn = {"Max": ev.maximum, "Min": ev.minimum}.get(op, ev.add)
    out = xs[0]
    for x in xs[1:]:
        out = call(fn, out, x)
    return out / len(xs) if op == "Mean" else out


# -- unary -----------------------------------------------------------------------------------
_UNARY = {"Neg": ev.negative, "Abs": ev.abs, "Sqrt": ev.sqrt, "Exp": ev.exp, "Log": ev.log,
          "Tanh": ev.tanh, "Sigmoid": ev.sigmoid, "Relu": ev.relu, "Erf": ev.erf, "Floor": ev.floor,
          "Ceil": ev.ceil, "Round": ev.round, "Sin": ev.sin, "Cos": ev.cos, "Softplus": ev.softplus,
          "Sign": ev.sign, "Reciprocal": lambda x: 1.0 / x,
          "Softsign": lambda x: x / (1.0 + ev.abs(x)), "Mish": lambda x: x * ev.tanh(ev.softplus(x))}


@imports(tuple(_UNARY))
def unary(b, ins, at):
    return call(_UNARY[b.step.proto.op_type], ins[0])


@imports("LeakyRelu", attrs={"alpha": ("f", 0.01)})
def leaky_relu(b, ins, at):
    return ev.leaky_relu(ins[0], at["alpha"])


@imports("Elu", attrs={"alpha": ("f", 1.0)})
def elu(b, ins, at):
    return ev.elu(ins[0], at["alpha"])


@imports("Selu", attrs={"alpha": ("f", 1.67326319217681884765625), "gamma": ("f", 1.05070102214813232421875)})
def selu(b, ins, at):
    return ev.elu(ins[0], at["alpha"]) * at["gamma"]


@imports("Celu", attrs={"alpha": ("f", 1.0)})
def celu(b, ins, at):
    x, a = ins[0], at["alpha"]
    return ev.relu(x) + ev.minimum(ev.expm1(x / a) * a, 0.0)


def hard_sigmoid(x, alpha, beta):
    return ev.clip(x * alpha + beta, 0.0, 1.0)


@imports("HardSigmoid", attrs={"alpha": ("f", 0.2), "beta": ("f", 0.5)})
def hard_sigmoid_(b, ins, at):
    return hard_sigmoid(ins[0], at["alpha"], at["beta"])


@imports("HardSwish")
def hard_swish(b, ins, at):
    return ins[0] * hard_sigmoid(ins[0], 1.0 / 6.0, 0.5)


@imports("ThresholdedRelu", attrs={"alpha": ("f", 1.0)})
def thresholded_relu(b, ins, at):
    x = ins[0]
    return ev.where(x > at["alpha"], x, 0.0)


@imports("Gelu", attrs={"approximate": ("s", "none")}, check=one_of("approximate", ("none", "tanh")))
def gelu(b, ins, at):
    return ev.gelu(ins[0], approximate=at["approximate"])


@imports("PRelu")
def prelu(b, ins, at):
    x, slope = ins
    broadcast(b, x, slope)
    return ev.where(x < 0.0, x * slope, x)


@imports("Clip", static=(1, 2))
def clip(b, ins, at):
    x, lo, hi = ins[0], opt(ins, 1), opt(ins, 2)
    if lo is not None and lo.size != 1 or hi is not None and hi.size != 1:
        b.fail("min and max must be scalars")
    lo = None if lo is None else float(np.asarray(lo).reshape(()))
    hi = None if hi is None else float(np.asarray(hi).reshape(()))
    if lo is None and hi is None:
        return x
    if lo is not None and hi is not None and lo > hi:
        return ev.minimum(ev.maximum(x, lo), hi)     # ONNX: every value becomes max
    return ev.clip(x, lo, hi)


# -- comparisons, logic, selection, casts ----------------------------------------------------
_COMPARE = {"Equal": ev.equal, "Less": ev.less, "LessOrEqual": ev.less_equal,
            "Greater": ev.greater, "GreaterOrEqual": ev.greater_equal}


@imports(tuple(_COMPARE))
def compare(b, ins, at):
    broadcast(b, *ins)
    return call(_COMPARE[b.step.proto.op_type], *ins)


@imports("Not")
def not_(b, ins, at):
    x = ins[0]
    return np.logical_not(x) if known(x) else ev.equal(x, np.zeros((), np.bool_))


@imports(("And", "Or", "Xor"))
def logic(b, ins, at):
    x, y = ins
    broadcast(b, x, y)
    op = b.step.proto.op_type
    if known(x, y):
        return {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}[op](x, y)
    # NOTE: exprvm's arithmetic is float: the booleans as 0.0 / 1.0
    fx, fy = ev.astype(b.node(x), np.float32), ev.astype(b.node(y), np.float32)
    return {"And": lambda: fx * fy > 0.5, "Or": lambda: fx + fy > 0.5, "Xor": lambda: ev.not_equal(fx, fy)}[op]()


@imports("Where")
def where(b, ins, at):
    c, x, y = ins
    broadcast(b, c, x, y)
    if known(c, x, y):
        return np.where(c, x, y)
    return ev.where(c, x, y)


def _cast(b, x, dt):
    if known(x):
        return np.asarray(x).astype(dt)
    return x if x.dtype == dt else ev.astype(x, dt)


def _cast_check(at):
    if at["to"] not in DTYPES:
        return "to", f"{at['to']} ({type_name(at['to'])}; exprvm nodes hold float32, float64, integers and bool)"
    return None


@imports("Cast", attrs={"to": ("i", REQUIRED), "saturate": ("i", 1), "round_mode": ("s", "up")},
         check=_cast_check, notes="float16, bfloat16, float8, strings")
def cast(b, ins, at):
    return _cast(b, ins[0], DTYPES[at["to"]])


@imports("CastLike", attrs={"saturate": ("i", 1), "round_mode": ("s", "up")})
def cast_like(b, ins, at):
    return _cast(b, ins[0], ins[1].dtype)


# -- reductions ---------------------------------------------------------------------------------

def reduce_axes(b, x, axes, noop):
    """The axes of a reduction as a sorted tuple; None: reduce nothing (noop_with_empty_axes)."""
    if axes is None or len(axes) == 0:
        return None if noop else tuple(range(len(x.shape)))
    n = len(x.shape)
    out = []
    for a in np.asarray(axes).reshape(-1).tolist():
        if not -n <= a < max(n, 1):
            b.fail(f"axis {a} is out of range for a {n}-d input")
        out.append(a % max(n, 1))
    return tuple(sorted(set(out)))


_REDUCE = {"ReduceSum": ev.sum, "ReduceMean": ev.mean, "ReduceMax": ev.max, "ReduceMin": ev.min,
           "ReduceLogSumExp": lambda x, **k: ev.logsumexp(x, **k),
           "ReduceSumSquare": lambda x, **k: ev.sum(x * x, **k),
           "ReduceL1": lambda x, **k: ev.sum(ev.abs(x), **k),
           "ReduceL2": lambda x, **k: ev.sqrt(ev.sum(x * x, **k)),
           "ReduceLogSum": lambda x, **k: ev.log(ev.sum(x, **k))}
MAX_FACTORS = 4096     # a product at run time is one multiply per factor


def _product(b, x, axis, keepdims):
    """ReduceProd: np.prod of a known value; of a node, the reduced axes moved last and
    flattened, then one multiply per factor (exprvm has no product op; this differentiates)."""
    if known(x):
        return np.prod(x, axis=axis, keepdims=keepdims)
    kept = [i for i in range(len(x.shape)) if i not in axis]
    count = int(np.prod([x.shape[a] for a in axis], dtype=np.int64))
    if count > MAX_FACTORS:
        b.refuse(f"ReduceProd over {count} elements at run time (at most {MAX_FACTORS})")
    flat = ev.reshape(ev.transpose(x, tuple(kept) + tuple(axis)), tuple(x.shape[i] for i in kept) + (count,))
    out = None
    for k in range(count):
        factor = ev.getitem(flat, (Ellipsis, k))
        out = factor if out is None else out * factor
    if out is None:
        out = np.ones(tuple(x.shape[i] for i in kept), x.dtype)
    shape = tuple(1 if i in axis else d for i, d in enumerate(x.shape) if keepdims or i not in axis)
    return ev.reshape(b.node(out), shape)
_EMPTY = {"ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceLogSumExp": -np.inf}


def _identity(op, dt):
    """The value a reduction of an empty set gives (ONNX): -inf for a max, inf for a min,
    or the dtype's extreme for integers and bool."""
    value = _EMPTY[op]
    if dt.kind == "f":
        return value
    if dt.kind == "b":
        return value > 0
    info = np.iinfo(dt)
    return info.max if value > 0 else info.min
_REDUCE_ATTRS = {"axes": ("ints", None), "keepdims": ("i", 1), "noop_with_empty_axes": ("i", 0)}


@imports(("ReduceProd",) + tuple(_REDUCE), attrs=_REDUCE_ATTRS, static=(1,))
def reduce(b, ins, at):
    x = ins[0]
    axes = at["axes"] if at["axes"] is not None else opt(ins, 1)
    axes = reduce_axes(b, x, axes, at["noop_with_empty_axes"])
    if axes is None:
        return x
    op = b.step.proto.op_type
    kw = {"axis": axes, "keepdims": bool(at["keepdims"])}
    if op == "ReduceProd":
        return _product(b, x, **kw)
    empty = _EMPTY.get(op)
    if empty is not None and any(x.shape[a] == 0 for a in axes):
        # NOTE: the reduction of an empty set is its identity (ONNX), not numpy's error
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if at["keepdims"] or i not in axes)
        return np.full(b.limit(shape), _identity(op, x.dtype), x.dtype)
    return call(_REDUCE[op], x, **kw)


@imports(("ArgMax", "ArgMin"), attrs={"axis": ("i", 0), "keepdims": ("i", 1), "select_last_index": ("i", 0)},
         check=one_of("select_last_index", (0,)))
def arg_extreme(b, ins, at):
    fn = ev.argmax if b.step.proto.op_type == "ArgMax" else ev.argmin
    return fn(ins[0], axis=at["axis"], keepdims=bool(at["keepdims"]))


@imports(("Softmax", "LogSoftmax"), attrs={"axis": ("i", -1)})
def softmax(b, ins, at):
    x = ins[0]
    if not -len(x.shape) <= at["axis"] < len(x.shape):
        b.fail(f"axis {at['axis']} is out of range for a {len(x.shape)}-d input")
    fn = ev.softmax if b.step.proto.op_type == "Softmax" else ev.log_softmax
    return fn(x, axis=at["axis"])


@imports("MatMul")
def matmul(b, ins, at):
    a, c = ins
    if len(a.shape) == 0 or len(c.shape) == 0:
        b.fail("MatMul needs operands of at least one dimension")
    batch = broadcast_shapes(b, tuple(a.shape[:-2]), tuple(c.shape[:-2]))
    b.limit(batch + tuple(a.shape[-2:-1]) + tuple(c.shape[-1:] if len(c.shape) > 1 else ()))
    return ev.matmul(a, c)


@imports("Einsum", attrs={"equation": ("s", REQUIRED)}, fold=False, notes="'...' in the equation")
def einsum(b, ins, at):
    eq = at["equation"].replace(" ", "")
    if "..." in eq:
        b.refuse("an ellipsis ('...') in the equation", "equation")
    return ev.einsum(eq, *ins)
