"""numpy's own functions on nodes: Node takes part in numpy's dispatch protocols,
__array_ufunc__ (NEP 13) and __array_function__ (NEP 18), as CuPy's and Dask's arrays
do, so np.tanh(node), np.sum(node, axis=0) and np.concatenate([a, b]) build exprvm
nodes, and numpy code written for arrays builds a graph when given nodes.

The tables below are the one list of what is covered: UFUNCS maps a numpy ufunc to the
exprvm function that builds it, FUNCTIONS a numpy function to its exprvm function
(with an adapter where numpy's signature differs). numpy_functions() returns them, and
the README's and docs/numpy.md's lists are generated from it (tests hold them equal).
A numpy function, ufunc method or argument without an entry raises UnsupportedError
naming it. Python operators (a * node, node @ W) keep going through Node's own methods.
"""
import inspect

import numpy as np

from ..core import Node, lift, shape_of
from ..errors import UnsupportedError
from .. import ops as ev

UFUNCS = {}       # numpy ufunc -> exprvm function
FUNCTIONS = {}    # numpy function -> (exprvm function, the name users see)
_SIGNATURES = {}


def _ufuncs():
    pairs = {
        np.add: ev.add, np.subtract: ev.subtract, np.multiply: ev.multiply, np.divide: ev.divide,
        np.power: ev.power, np.negative: ev.negative, np.absolute: ev.abs, np.fabs: ev.fabs,
        np.sign: ev.sign, np.exp: ev.exp, np.expm1: ev.expm1, np.exp2: ev.exp2, np.log: ev.log,
        np.log1p: ev.log1p, np.log2: ev.log2, np.log10: ev.log10, np.sqrt: ev.sqrt,
        np.square: ev.square, np.reciprocal: ev.reciprocal, np.sin: ev.sin, np.cos: ev.cos,
        np.tan: ev.tan, np.arcsin: ev.arcsin, np.arccos: ev.arccos, np.arctan: ev.arctan,
        np.arctan2: ev.arctan2, np.hypot: ev.hypot, np.sinh: ev.sinh, np.cosh: ev.cosh,
        np.tanh: ev.tanh, np.arcsinh: ev.arcsinh, np.arccosh: ev.arccosh, np.arctanh: ev.arctanh,
        np.deg2rad: ev.deg2rad, np.rad2deg: ev.rad2deg, np.radians: ev.radians, np.degrees: ev.degrees,
        np.logaddexp: ev.logaddexp, np.logaddexp2: ev.logaddexp2, np.maximum: ev.maximum,
        np.minimum: ev.minimum, np.fmax: ev.fmax, np.fmin: ev.fmin, np.remainder: ev.remainder,
        np.fmod: ev.fmod, np.floor: ev.floor, np.ceil: ev.ceil, np.trunc: ev.trunc,
        np.rint: lambda x: ev.round(x, 0), np.less: ev.less, np.less_equal: ev.less_equal,
        np.greater: ev.greater, np.greater_equal: ev.greater_equal, np.equal: ev.equal,
        np.not_equal: ev.not_equal, np.logical_and: ev.logical_and, np.logical_or: ev.logical_or,
        np.logical_xor: ev.logical_xor, np.logical_not: ev.logical_not, np.isnan: ev.isnan,
        np.isinf: ev.isinf, np.isfinite: ev.isfinite, np.matmul: ev.matmul,
        np.positive: lambda x: x,
    }
    UFUNCS.update(pairs)


def _take(a, indices, axis=None, out=None, mode="raise"):
    if mode != "raise":
        raise UnsupportedError(f"mode={mode!r} is not supported (indices out of range are an error)")
    return ev.take(ev.ravel(a), indices, 0) if axis is None else ev.take(a, indices, axis)


def _concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    if axis is None:
        return ev.concatenate([ev.ravel(a) for a in arrays], axis=0)
    return ev.concatenate(arrays, axis=axis)


def _where(condition, *xy):
    if len(xy) != 2:
        raise UnsupportedError("where(condition) alone (the indices of true elements) has a "
                               "data-dependent shape; give x and y")
    return ev.where(condition, *xy)


def _reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    if order != "C":
        raise UnsupportedError(f"order={order!r} is not supported: nodes are laid out in C order")
    return ev.reshape(a, shape if shape is not None else newshape)


def _like(value):
    def fn(a, *args, dtype=None, shape=None, **kwargs):
        fill = args[0] if value is None else value
        a = lift(a)
        dt = np.dtype(dtype) if dtype is not None else a.dtype
        return ev.broadcast_to(a.graph.constant(np.asarray(fill, dt), dtype=dt),
                               a.shape if shape is None else shape)
    return fn


def _functions():
    same = ["sum", "mean", "max", "min", "prod", "std", "var", "cumsum", "cumprod", "argmax", "argmin",
            "stack", "transpose", "tensordot", "einsum", "outer", "inner", "kron", "cross", "vdot",
            "dot", "trace", "diag", "diagonal", "tril", "triu", "clip", "pad", "split", "array_split",
            "hsplit", "vsplit", "dsplit", "repeat", "tile", "expand_dims", "squeeze", "ravel", "moveaxis",
            "swapaxes", "rollaxis", "roll", "flip", "fliplr", "flipud", "rot90", "atleast_1d",
            "atleast_2d", "atleast_3d", "broadcast_to", "broadcast_arrays", "hstack", "vstack", "dstack",
            "column_stack", "append", "diff", "sort", "argsort", "partition", "argpartition",
            "take_along_axis", "select", "linspace", "nan_to_num", "sinc", "fix", "round"]
    for name in same:
        FUNCTIONS[getattr(np, name)] = (getattr(ev, name), name)
    if hasattr(np, "row_stack"):
        FUNCTIONS[np.row_stack] = (ev.row_stack, "row_stack")
    extra = {
        np.amax: (ev.max, "max"), np.amin: (ev.min, "min"), np.around: (ev.round, "round"),
        np.take: (_take, "take"), np.concatenate: (_concatenate, "concatenate"),
        np.where: (_where, "where"), np.reshape: (_reshape, "reshape"),
        np.linalg.norm: (ev.norm, "norm"), np.copy: (lambda a, order="K", subok=False: a, "a node (immutable)"),
        np.shape: (lambda a: a.shape, ".shape"), np.ndim: (lambda a: a.ndim, ".ndim"),
        np.size: (lambda a, axis=None: a.size if axis is None else a.shape[axis], ".size"),
        np.zeros_like: (_like(0.0), "a constant node"), np.ones_like: (_like(1.0), "a constant node"),
        np.full_like: (_like(None), "a constant node"),
        np.linalg.matmul: (ev.matmul, "matmul"), np.linalg.outer: (ev.outer, "outer"),
        np.linalg.tensordot: (ev.tensordot, "tensordot"),
        np.linalg.cross: (lambda x1, x2, axis=-1: ev.cross(x1, x2, axis=axis), "cross"),
        np.linalg.diagonal: (lambda x, offset=0: ev.diagonal(x, offset, -2, -1), "diagonal"),
        np.linalg.trace: (lambda x, offset=0, dtype=None: ev.trace(x, offset, -2, -1, dtype), "trace"),
    }
    FUNCTIONS.update(extra)


def _signature(fn):
    sig = _SIGNATURES.get(fn)
    if sig is None:
        try:
            sig = _SIGNATURES[fn] = inspect.signature(fn)
        except (TypeError, ValueError):     # pragma: no cover - builtins without one
            sig = _SIGNATURES[fn] = False
    return sig


def _call(fn, what, args, kwargs):
    """fn(*args, **kwargs), the keywords fn does not take dropped when they hold numpy's
    default (None), refused otherwise with an error naming them."""
    sig = _signature(fn)
    if sig and kwargs:
        params = sig.parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = [k for k in kwargs if k not in params]
            bad = [k for k in unknown if kwargs[k] is not None and kwargs[k] is not np._NoValue]
            if bad:
                raise UnsupportedError(f"{what}: argument{'s' if len(bad) > 1 else ''} "
                                       f"{', '.join(f'{k}={kwargs[k]!r}' for k in bad)} "
                                       f"not supported on nodes")
            kwargs = {k: v for k, v in kwargs.items() if k not in unknown}
    kwargs = {k: v for k, v in kwargs.items() if v is not np._NoValue}
    return fn(*args, **kwargs)


def _outs(kwargs, what):
    out = kwargs.pop("out", None)
    if out is not None and any(o is not None for o in (out if isinstance(out, tuple) else (out,))):
        raise UnsupportedError(f"{what}: out= is not supported on nodes: an op makes a new node")


_REDUCE = {np.add: ev.sum, np.multiply: ev.prod, np.maximum: ev.max, np.minimum: ev.min}
_ACCUMULATE = {np.add: ev.cumsum, np.multiply: ev.cumprod}


def array_ufunc(self, ufunc, method, *inputs, **kwargs):
    """Node.__array_ufunc__: numpy ufuncs (and their reduce, accumulate and outer) on nodes."""
    what = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
    _outs(kwargs, what)
    fn = UFUNCS.get(ufunc)
    if method == "__call__" and fn is not None:
        if kwargs:
            raise UnsupportedError(f"{what}: arguments {', '.join(sorted(kwargs))} are not supported on nodes")
        return fn(*inputs)
    if method == "reduce" and ufunc in _REDUCE:
        (x,) = inputs
        return _call(_REDUCE[ufunc], what, (x,), {"axis": kwargs.pop("axis", 0), **kwargs})
    if method == "accumulate" and ufunc in _ACCUMULATE:
        (x,) = inputs
        return _call(_ACCUMULATE[ufunc], what, (x,), {"axis": kwargs.pop("axis", 0), **kwargs})
    if method == "outer" and fn is not None and not kwargs:
        a, b = inputs
        nb = len(shape_of(b))
        return fn(ev.reshape(a, shape_of(a) + (1,) * nb), b)
    if fn is None:
        raise UnsupportedError(f"{what} has no exprvm op (see ev.numpy_functions() for what is covered)")
    raise UnsupportedError(f"{what}: the ufunc method {method!r} is not supported on nodes")


def array_function(self, func, types, args, kwargs):
    """Node.__array_function__: numpy's functions on nodes (and on lists holding nodes)."""
    entry = FUNCTIONS.get(func)
    name = _numpy_name(func)
    if entry is None:
        raise UnsupportedError(f"{name} has no exprvm function (see ev.numpy_functions() for what is "
                               f"covered)")
    kwargs = dict(kwargs)
    _outs(kwargs, name)
    return _call(entry[0], name, args, kwargs)


def _numpy_name(func):
    module = getattr(func, "__module__", None) or "numpy"
    return f"{module if module.startswith('numpy') else 'numpy'}.{func.__name__}"


def numpy_functions():
    """The numpy functions and ufuncs that build exprvm nodes when given nodes.

    Returns
    -------
    list of (str, str)
        (numpy's name, what it builds: the exprvm function's name), sorted by numpy's name.
    """
    rows = {}
    for uf, fn in UFUNCS.items():
        rows[f"numpy.{uf.__name__}"] = _ev_name(fn, uf.__name__)
    for uf in _REDUCE:
        rows[f"numpy.{uf.__name__}.reduce"] = f"ev.{_REDUCE[uf].__name__}"
    for uf in _ACCUMULATE:
        rows[f"numpy.{uf.__name__}.accumulate"] = f"ev.{_ACCUMULATE[uf].__name__}"
    for func, (fn, shown) in FUNCTIONS.items():
        rows[_numpy_name(func)] = shown if not shown.isidentifier() else f"ev.{shown}"
    return sorted(rows.items())


def _ev_name(fn, default):
    name = getattr(fn, "__name__", "<lambda>")
    if name == "<lambda>":
        return {"rint": "ev.round(x, 0)", "positive": "the node itself"}.get(default, default)
    return f"ev.{name}" if hasattr(ev, name) else f"ev.{default}"


def markdown_table():
    """The docs' table of numpy_functions(), as Markdown."""
    lines = ["| numpy | exprvm |", "| --- | --- |"]
    lines += [f"| `{n}` | `{e}` |" for n, e in numpy_functions()]
    return "\n".join(lines) + "\n"


def name_list():
    """The README's list: numpy's names, comma separated, without the `numpy.` prefix."""
    return ", ".join(f"`{n[len('numpy.'):]}`" for n, _ in numpy_functions()) + "\n"


def install():
    """Give Node numpy's two dispatch protocols (ops/__init__ calls this once)."""
    _ufuncs()
    _functions()
    Node.__array_ufunc__ = array_ufunc
    Node.__array_function__ = array_function


def update_docs(root):
    """Rewrite the generated blocks of README.md and docs/numpy.md under root
    (`python -m exprvm.ops.numpy_api` from the repository's root)."""
    import pathlib
    import re
    root = pathlib.Path(root)
    for path, tag, text in ((root / "README.md", "numpy-functions", name_list()),
                            (root / "docs" / "numpy.md", "numpy-table", markdown_table())):
        doc = path.read_text()
        new = re.sub(rf"(<!-- {tag} -->\n).*?(<!-- /{tag} -->)", lambda m: m.group(1) + text + m.group(2),
                     doc, flags=re.S)
        path.write_text(new)


if __name__ == "__main__":     # pragma: no cover - a maintainer's command
    from exprvm.ops import numpy_api     # the installed tables, not this __main__ copy's
    numpy_api.update_docs(".")
