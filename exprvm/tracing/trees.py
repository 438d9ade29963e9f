"""Arguments and results of a traced function as trees: containers (tuple, list, dict)
over leaves. An argument tree's array leaves become the traced graph's inputs; every
other leaf is static (part of the cache key). A result tree's node leaves become the
machine's outputs.

A tree's *shape* is plain hashable data, so an argument tree's shape (with each array's
shape and dtype in it) is the cache key of the program traced for it.
"""
import numpy as np

from ..core import Node
from ..errors import UsageError

ARRAY, STATIC, MODULE, NODE = "array", "static", "module", "node"


def is_module(x):
    """An ev.nn block (duck-typed: this package sits below ev.nn)."""
    return callable(getattr(x, "params", None)) and hasattr(x, "collect_grads")


def flatten_args(x, leaves, where):
    """The shape of argument tree x (hashable), appending its arrays to leaves. `where`
    names the argument in errors."""
    t = type(x)
    if t is np.ndarray:
        leaves.append(x)
        return (ARRAY, x.shape, x.dtype)
    if t is tuple or t is list:
        return (t, tuple(flatten_args(v, leaves, f"{where}[{i}]") for i, v in enumerate(x)))
    if t is dict:
        keys = tuple(x)
        return (dict, keys, tuple(flatten_args(x[k], leaves, f"{where}[{k!r}]") for k in keys))
    if isinstance(x, np.generic):               # a numpy scalar: a 0-d array
        a = np.asarray(x)
        leaves.append(a)
        return (ARRAY, a.shape, a.dtype)
    if isinstance(x, Node):
        raise UsageError(f"ev.function: {where} is a graph node ({x.describe()}); a traced function "
                         "is called with arrays (inside a graph, call the plain function)")
    if is_module(x):                            # its parameters are read in place
        return (MODULE, id(x), _modes(x))
    try:
        hash(x)
    except TypeError:
        raise UsageError(f"ev.function: {where} is a {t.__name__}, neither an array nor hashable; "
                         "pass arrays, numbers, hashable values, ev.nn models, or tuples, lists "
                         "and dicts of them") from None
    return (STATIC, t, x)


def _modes(model):
    """The training flags of a model's blocks: train() and eval() build different graphs
    (batch norm's statistics, dropout), so each mode is traced apart."""
    blocks = model.modules() if callable(getattr(model, "modules", None)) else (model,)
    return tuple(bool(getattr(b, "training", True)) for b in blocks)


def rebuild_args(shape, leaves, modules):
    """The argument tree of this shape over new leaves (the traced inputs), consumed in order;
    modules maps id -> the module passed."""
    kind = shape[0]
    if kind == ARRAY:
        return leaves.pop(0)
    if kind is tuple or kind is list:
        return kind(rebuild_args(s, leaves, modules) for s in shape[1])
    if kind is dict:
        return {k: rebuild_args(s, leaves, modules) for k, s in zip(shape[1], shape[2])}
    if kind == MODULE:
        return modules[shape[1]]
    return shape[2]


def modules_in(x, out):
    """{id: module} of the ev.nn models in argument tree x."""
    if type(x) in (tuple, list):
        for v in x:
            modules_in(v, out)
    elif type(x) is dict:
        for v in x.values():
            modules_in(v, out)
    elif is_module(x):
        out[id(x)] = x
    return out


def describe(shape):
    """An argument tree's shape as text: float32[32, 20], (.., ..), {'k': ..}, or a value."""
    kind = shape[0]
    if kind == ARRAY:
        return f"{shape[2].name}{list(shape[1])}"
    if kind is tuple or kind is list:
        inner = ", ".join(describe(s) for s in shape[1])
        return f"({inner})" if kind is tuple else f"[{inner}]"
    if kind is dict:
        return "{" + ", ".join(f"{k!r}: {describe(s)}" for k, s in zip(shape[1], shape[2])) + "}"
    if kind == MODULE:
        return "<model>" if all(shape[2]) else "<model, eval>"
    return repr(shape[2])


def flatten_result(x, nodes):
    """The shape of a traced function's result (its node leaves appended to nodes)."""
    t = type(x)
    if isinstance(x, Node):
        nodes.append(x)
        return (NODE,)
    if t is tuple or t is list:
        return (t, tuple(flatten_result(v, nodes) for v in x))
    if t is dict:
        keys = tuple(x)
        return (dict, keys, tuple(flatten_result(x[k], nodes) for k in keys))
    return (STATIC, x)


def rebuild_result(shape, values, at=0):
    """(the result tree over the run's values, the next value's index)."""
    kind = shape[0]
    if kind == NODE:
        return values[at], at + 1
    if kind is tuple or kind is list:
        out = []
        for s in shape[1]:
            v, at = rebuild_result(s, values, at)
            out.append(v)
        return kind(out), at
    if kind is dict:
        out = {}
        for k, s in zip(shape[1], shape[2]):
            out[k], at = rebuild_result(s, values, at)
        return out, at
    return shape[1], at
