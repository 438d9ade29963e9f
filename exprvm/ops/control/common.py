"""What every control-flow op shares: the tuple value of a multi-result node, its
projections (op "result") and the checks of traced functions' results."""
import math

import numpy as np

from ...core import OPS, Node, build_node, defop
from ...core.body import as_body_node, function_name, function_site
from ...core.tree import flatten
from ...errors import DTypeError, ExprError, ShapeError

# A multi-result node has no array value of its own: its value is a tuple of arrays.
TUPLE = np.dtype(object)


def tuple_rule(*inputs, results, **params):
    """The shape rule of a multi-result op: its results are described by `results`."""
    return (), TUPLE


def spec(node):
    """(shape, dtype name) of a node, as a `results` entry."""
    return (tuple(node.shape), node.dtype.str)


def _result_rule(x, index):
    if x.opdef is None or not x.opdef.multiple_results:
        raise ShapeError(f"result: {x.label} is not a node with several results")
    results = x.params["results"]
    if not 0 <= index < len(results):
        raise ShapeError(f"result: index {index} out of range for {len(results)} results")
    shape, dt = results[index]
    return tuple(shape), np.dtype(dt)


def _result_vjp(g, ans, x, index):
    # NOTE: core.grad gathers the gradients of a multi-result node's projections and
    # runs the node's vjp_all once; a projection's own rule is never called.
    raise AssertionError("result's gradient is gathered by its multi-result node")


_result = defop("result", lambda x, index: x[index], _result_rule, vjp=(_result_vjp,),
                doc="One result of a multi-result node (a loop or a branch).")


def results_of(node):
    """The projection nodes of every result of a multi-result node, in order."""
    op = OPS["result"]
    return [build_node(op, (node,), {"index": k}) for k in range(len(node.params["results"]))]


def graph_of(*values):
    """The graph of the first node among nested values, or None."""
    for v in values:
        leaves, _ = flatten(v)
        for x in leaves:
            if isinstance(x, Node):
                return x.graph
    return None


def float_dtype_of(*values, default=np.float64):
    """The dtype a Python number among loop values takes: the first float node's."""
    for v in values:
        leaves, _ = flatten(v)
        for x in leaves:
            if isinstance(x, Node) and x.dtype.kind == "f":
                return x.dtype
            if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind == "f":
                return x.dtype
    return np.dtype(default)


def as_value(x, dtype):
    """A loop's outer value (init, xs, operand) as a node or an array: numbers take dtype."""
    if isinstance(x, Node):
        return x
    if isinstance(x, (bool, np.bool_)):
        return np.asarray(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return np.asarray(x, dtype=dtype if isinstance(x, float) or dtype.kind == "f" else None)
    try:
        arr = np.asarray(x)
    except Exception:
        raise ExprError(f"expected a node, an array or a number, got {type(x).__name__}") from None
    if arr.dtype.kind not in "fiub":
        raise DTypeError(f"expected a node, an array or a number, got {type(x).__name__} ({arr.dtype})")
    return arr


def shape_dtype(x):
    if isinstance(x, Node):
        return tuple(x.shape), x.dtype
    return tuple(np.shape(x)), np.asarray(x).dtype


def check_like(fn, who, what, got, want, site):
    """A traced function's result must keep the structure, shapes and dtypes it was given."""
    for k, (g, (shape, dtype)) in enumerate(zip(got, want)):
        if tuple(g.shape) != tuple(shape) or g.dtype != dtype:
            raise ExprError(f"{who}: {function_name(fn)} (defined at {function_site(fn)}) returned "
                            f"{what} {k} of shape {tuple(g.shape)} {g.dtype.name}, but it must keep "
                            f"shape {tuple(shape)} {np.dtype(dtype).name} from one iteration to the next "
                            f"(called at {site})")


def body_nodes(fn, who, what, graph, values, dtypes, site):
    """Results of a traced function as nodes of its body graph (one per leaf)."""
    out = []
    for k, (v, dt) in enumerate(zip(values, dtypes)):
        try:
            out.append(as_body_node(graph, v, dt, f"{who}: {what} {k} of {function_name(fn)}"))
        except ExprError as e:
            raise type(e)(f"{e} (defined at {function_site(fn)}, called at {site})") from None
    return out


def _unpack_impl(x, offset, shape, dtype):
    dt = np.dtype(dtype)
    return x[offset:offset + math.prod(shape) * dt.itemsize].view(dt).reshape(shape)


def _unpack_rule(x, offset, shape, dtype):
    if x.dtype != np.uint8 or x.ndim != 1:
        raise ShapeError(f"unpack reads packed bytes, got {x.shape} {x.dtype.name}")
    return tuple(shape), np.dtype(dtype)


# The compiler's form of a projection: a view of the packed bytes of a loop's results
# (compiler/ir.py packs them into one buffer).
_unpack = defop("unpack", _unpack_impl, _unpack_rule, view=True,
                doc="One result of a loop, viewed in the loop's packed result bytes (compiler-made).")

# Ops tested by tests/test_control_flow.py rather than by the generic op table: their
# params hold traced bodies, and their values are tuples of arrays or packed bytes.
TESTED_ELSEWHERE = ("cond", "result", "scan", "unpack", "while_loop")
