"""Shape and dtype rules shared by many ops, and unbroadcast for their gradients."""
import operator

import numpy as np

from ..errors import DTypeError, ShapeError
from .graph import FLOAT_DTYPES, Node
from .site import user_site


def is_basic_index(index):
    """Does an index tuple hold only ints, slices, None and Ellipsis (numpy's basic
    indexing, which gives views)?"""
    for i in index:
        # NOTE: a loop with exact type tests first: asked for every view a compile makes
        t = type(i)
        if t is not slice and t is not int and i is not None and i is not Ellipsis \
                and not isinstance(i, (int, np.integer, slice)):
            return False
    return True


def ndim_of(x):
    """ndim of a Node, an ndarray or a Python value (a list of nodes: as stacked)."""
    if hasattr(x, "ndim"):
        return x.ndim
    return len(shape_of(x)) if isinstance(x, (list, tuple)) else np.ndim(x)


def shape_of(x):
    """shape of a Node, an ndarray or a Python value. A list holding nodes has the shape
    of their stack (build_node stacks it, core.op.stacked); numpy would read the nodes'
    values instead."""
    if hasattr(x, "shape"):
        return tuple(x.shape)
    if isinstance(x, (list, tuple)) and x and node_in(x) is not None:
        return (len(x),) + shape_of(x[0])
    return np.shape(x)


def node_in(seq):
    """The first Node in a nested list or tuple, or None."""
    for a in seq:
        if isinstance(a, Node):
            return a
        if isinstance(a, (list, tuple)):
            found = node_in(a)
            if found is not None:
                return found
    return None


def same_float_dtype(*nodes):
    dt = nodes[0].dtype
    if dt.kind == "f":
        for n in nodes:
            if n.dtype != dt:
                break
        else:
            return dt
    dts = {n.dtype for n in nodes}
    if len(dts) > 1:
        raise DTypeError("operands mix dtypes " + " and ".join(sorted(d.name for d in dts))
                         + " (cast one with ev.astype)")
    dt = next(iter(dts))
    if dt.kind != "f":
        raise DTypeError(f"expected float operands, got {dt.name}")
    return dt


def _broadcast2(a, b):
    """numpy's broadcasting of two shapes, in plain Python (the hot case of node building)."""
    if a == b or not b:
        return a
    if not a:
        return b
    if len(a) < len(b):
        a, b = b, a
    out = list(a)
    off = len(a) - len(b)
    for i, d in enumerate(b):
        e = a[off + i]
        if d != e and d != 1:
            if e != 1:
                raise ShapeError(f"cannot broadcast shapes {a} and {b}")
            out[off + i] = d
    return tuple(out)


def broadcast(*nodes):
    first = nodes[0].shape
    if len(nodes) == 2:
        return _broadcast2(first, nodes[1].shape)
    if all(n.shape == first for n in nodes):
        return first
    try:
        return tuple(np.broadcast_shapes(*(n.shape for n in nodes)))
    except ValueError:
        raise ShapeError("cannot broadcast shapes " + " and ".join(str(n.shape) for n in nodes)) from None


# NOTE: the hot cases of elementwise_rule, without its argument packing; `in
# FLOAT_DTYPES` compares identities first, where dtype.kind is a slow attribute.

def unary_rule(x):
    """The rule of a unary elementwise op."""
    if x.dtype in FLOAT_DTYPES:
        return x.shape, x.dtype
    return elementwise_rule(x)


def binary_rule(a, b):
    """The rule of a binary elementwise op."""
    dt = a.dtype
    if dt is b.dtype and dt in FLOAT_DTYPES:
        return _broadcast2(a.shape, b.shape), dt
    return elementwise_rule(a, b)


def integer_or_binary_rule(a, b):
    """binary_rule, or two integer operands of one dtype (a loop's counter: i + 1)."""
    dt = a.dtype
    if dt is b.dtype and dt in FLOAT_DTYPES:    # binary_rule's hot case, without its call
        return _broadcast2(a.shape, b.shape), dt
    if dt == b.dtype and dt.kind in "iu":
        return broadcast(a, b), dt
    return binary_rule(a, b)


def elementwise_rule(*nodes, **_):
    """Broadcast shape, one float dtype (unary_rule and binary_rule take the hot cases)."""
    return broadcast(*nodes), same_float_dtype(*nodes)


def compare_rule(a, b):
    if a.dtype != b.dtype:
        raise DTypeError(f"cannot compare {a.dtype.name} with {b.dtype.name}")
    return broadcast(a, b), np.dtype(bool)


def arg_error(op, msg):
    """A ShapeError for an op's bad argument, raised before its node is built: it names
    the op and the user's line, as the errors of a shape rule do."""
    return ShapeError(f"{op + ': ' if op else ''}{msg}\n  built at {user_site()}")


def int_tuple(values, what, op=None):
    """values (an int or a sequence of ints) as a tuple of Python ints; a float, a bool or
    anything else is a ShapeError naming op (int() would truncate 1.5 to 1 silently)."""
    seq = (values,) if isinstance(values, (int, np.integer)) else values
    try:
        out = tuple(operator.index(v) for v in seq)
    except TypeError:
        raise arg_error(op, f"{what} must be an int or a tuple of ints, got {values!r}") from None
    if any(isinstance(v, (bool, np.bool_)) for v in seq):
        raise arg_error(op, f"{what} must be an int or a tuple of ints, got {values!r}")
    return out


def norm_axis(axis, ndim, op=None):
    """Normalise axis= to a sorted tuple of non-negative ints (None -> all axes).

    As numpy: an axis outside [-ndim, ndim) is an error, never wrapped; a ShapeError
    names op and the user's line."""
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and 0 <= axis < ndim:      # NOTE: the common cases, checked as below
        return (axis,)
    if type(axis) is tuple:
        last = -1
        for a in axis:
            if type(a) is not int or not last < a < ndim:
                break
            last = a
        else:
            return axis         # already sorted, distinct and in range
    axes = int_tuple(axis, "axis", op)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1) or (ndim == 0 and a not in (0, -1)):
            raise arg_error(op, f"axis {a} is out of range for a {ndim}-d operand")
        out.append(a % max(ndim, 1))
    if len(set(out)) != len(out):
        raise arg_error(op, f"repeated axis in {axis}")
    return tuple(sorted(out))


# -- gradients through broadcasting ----------------------------------------------------

def unbroadcast(g, shape):
    """Sum g down to `shape`, undoing numpy broadcasting (works on nodes and arrays)."""
    gshape = tuple(g.shape)
    shape = tuple(shape)
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and gshape[lead + i] != 1)
    # NOTE: .sum/.reshape are methods of both Node and ndarray: arrays skip apply().
    if axes:
        g = g.sum(axis=axes)
    return g if tuple(g.shape) == shape else g.reshape(shape)


# -- what the compiler may know of an op (Op.identity, Op.batch) ------------------------

def passthrough(ins, shape, dtype, params):
    """Op.identity of reshape / broadcast_to / astype: the operand, when it already has
    the result's shape and dtype."""
    x = ins[0]
    return 0 if tuple(x.shape) == tuple(shape) and x.dtype == dtype else None


def neutral(number, commutative=True):
    """Op.identity of x + 0, x - 0, x * 1: the operand whose partner is a constant equal
    to `number` everywhere, when it has the result's shape and dtype (exact, never a cast
    or a broadcast). Operands expose .shape, .dtype and .const_value (None unless constant)."""
    pairs = ((0, 1), (1, 0)) if commutative else ((0, 1),)

    def identity(ins, shape, dtype, params):
        for i, j in pairs:
            c = ins[j].const_value
            if (c is not None and c.size > 0 and bool(np.all(c == number))
                    and tuple(ins[i].shape) == tuple(shape) and ins[i].dtype == dtype):
                return i
        return None
    return identity


def batch_elementwise(in_shapes, shape, params):
    """Op.batch of an elementwise op: same-shaped operands stack, broadcast ones are shared."""
    roles = []
    for s in in_shapes:
        if s == shape:
            roles.append("b")
        elif len(s) < len(shape) or (len(s) == len(shape) and s[0] == 1):
            roles.append("s")
        else:
            return None
    return tuple(roles)


def batch_rows(*roles):
    """Op.batch of an op acting on the rows of its operands (2-d or more) independently."""
    def batch(in_shapes, shape, params):
        return roles if all(len(s) >= 1 for s in in_shapes) and len(shape) >= 1 else None
    return batch
