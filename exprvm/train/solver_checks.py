"""Argument checks for the solvers (solvers.py): parameters, gradients, hyper-parameters.

In: what a user passed to a solver. Out: the validated values, or a typed ExprError
naming the parameter or the hyper-parameter.
"""
import math

import numpy as np

from ..core import Node, array_owner
from ..errors import CheckpointError, DTypeError, ExprError, ShapeError, UsageError

PASS = "pass the graph's parameter nodes, an ev.nn model, or model.parameters()"


def resolve(params, who):
    """What a solver was given, as a list of parameters or a dict name -> parameter: an
    ev.nn model (its trainable Params), model.parameters() (each array's Param), a
    parameter, or a list / dict / iterable of them. Anything else is a UsageError that
    says what to pass."""
    if callable(getattr(params, "params", None)) and hasattr(params, "collect_grads"):   # a Module
        return {p.name: p for p in params.params() if getattr(p, "trainable", True)}
    if isinstance(params, Node) or (hasattr(params, "grad") and hasattr(params, "value")):
        params = [params]
    if isinstance(params, dict):
        return {name: _param(p, name, who) for name, p in params.items()}
    if isinstance(params, (str, bytes, np.ndarray)) or not hasattr(params, "__iter__"):
        _param(params, None, who)
        raise UsageError(f"{who}: expected parameters, got {type(params).__name__}; {PASS}")
    return [_param(p, None, who) for p in params]


def _param(p, name, who):
    """One parameter, checked (an array of an ev.nn model is its Param)."""
    what = f" for {name!r}" if name else ""
    if isinstance(p, np.ndarray):
        owner = array_owner(p)
        if owner is not None:
            return owner
        raise UsageError(f"{who}: got a numpy array{what}; a solver updates a parameter through its "
                         f".grad, which an array has not: {PASS}")
    if isinstance(p, (str, bytes)):
        raise UsageError(f"{who}: got the string {p!r}{what} where a parameter belongs; pass the "
                         f"parameter itself ({PASS})")
    if isinstance(p, Node) and not p.is_leaf:
        raise UsageError(f"{who}: {p.describe()}{what} is computed by op {p.op}, not a parameter; {PASS}")
    if not (hasattr(p, "value") and hasattr(p, "grad")):
        raise UsageError(f"{who}: {type(p).__name__}{what} is not a parameter (it has no .value and "
                         f".grad); {PASS}")
    return p


def named(params):
    """(name, param) pairs from a list of parameters or a dict name -> parameter."""
    if isinstance(params, dict):
        for name in params:
            if not isinstance(name, str) or not name:
                raise ExprError(f"solver: parameter names must be non-empty strings, got {name!r}")
        return list(params.items())
    pairs = []
    for p in params:
        name = getattr(p, "name", None)
        if not isinstance(name, str) or not name:
            raise ExprError(f"solver: parameter {p!r} has no name; pass a dict name -> parameter")
        pairs.append((name, p))
    return pairs


def split_by_grad(params, who):
    """(the (name, param) pairs that have a gradient, the names of those that have none),
    refusing a parameter listed twice."""
    having, missing, seen = [], [], set()
    for name, p in named(params):
        if id(p) in seen:
            raise ExprError(f"{who}.step: parameter {name!r} is listed twice")
        seen.add(id(p))
        if p.grad is None:
            missing.append(name)
        else:
            having.append((name, p))
    return having, missing


def check_value(name, value):
    if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64):
        got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise DTypeError(f"parameter {name!r}: value must be a float32 or float64 array, got {got}")
    if not value.flags.writeable:
        raise ExprError(f"parameter {name!r}: value is read-only and cannot be updated in place")
    return value


def check_grad(name, value, grad):
    # NOTE: a scalar parameter's gradient may arrive as a numpy scalar, not a 0-d array.
    grad = np.asarray(grad)
    if grad.dtype.kind != "f":
        raise DTypeError(f"parameter {name!r}: gradient dtype {grad.dtype} is not a float type")
    if grad.shape != value.shape:
        raise ShapeError(
            f"parameter {name!r}: gradient shape {grad.shape} does not match value {value.shape}")
    return grad


def finite(g):
    # NOTE: one reduction, no allocation on the steady path; a NaN or Inf makes the sum
    # non-finite. A sum that overflows from finite values is confirmed element by element.
    total = np.add.reduce(g.reshape(-1))
    return bool(np.isfinite(total)) or bool(np.isfinite(g).all())


def count_bad(name, g):
    nan, inf = int(np.isnan(g).sum()), int(np.isinf(g).sum())
    return f"parameter {name!r} ({nan} NaN, {inf} Inf of {g.size})"


def entry(d, key, what):
    if key not in d:
        raise CheckpointError(f"solver state has no {what} (key {key!r})")
    return np.asarray(d[key])


def positive(name, x):
    """``x`` as a float if it is a finite number > 0, else an ExprError naming the hyper-parameter ``name``."""
    if not (isinstance(x, (int, float, np.floating, np.integer)) and x > 0 and math.isfinite(x)):
        raise ExprError(f"solver: {name} must be a finite number > 0, got {x!r}")
    return float(x)


def nonneg(name, x):
    """``x`` as a float if it is a finite number >= 0, else an ExprError naming the hyper-parameter ``name``."""
    if not (isinstance(x, (int, float, np.floating, np.integer)) and x >= 0 and math.isfinite(x)):
        raise ExprError(f"solver: {name} must be a finite number >= 0, got {x!r}")
    return float(x)


def unit(name, x):
    """``x`` as a float if it is in [0, 1), else an ExprError naming the hyper-parameter ``name``."""
    if not (isinstance(x, (int, float, np.floating, np.integer)) and 0 <= x < 1):
        raise ExprError(f"solver: {name} must be in [0, 1), got {x!r}")
    return float(x)
