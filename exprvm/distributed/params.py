"""What the ranks must agree on: parameter collections turned into named entries,
their layouts, and the message that says where two ranks differ.

A parameter collection is an ev.nn Module, a dict name -> parameter, or a list of
parameter nodes / ev.nn Params. Every entry has a name (a Param's dotted name, a
node's label), a `.value` and, after a run, a `.grad`.
"""
from collections.abc import Mapping

import numpy as np

from ..errors import ExprError


def named(params, who):
    """[(name, object)] from a Module, a dict name -> parameter, or a list of parameters."""
    if hasattr(params, "params") and callable(params.params):      # an ev.nn Module
        return [(p.name, p) for p in params.params()]
    if isinstance(params, Mapping):
        return list(params.items())
    if isinstance(params, (list, tuple)):
        out = []
        for i, p in enumerate(params):
            name = getattr(p, "name", None) or getattr(p, "label", None)
            if not isinstance(name, str) or not hasattr(p, "value"):
                raise ExprError(f"{who}: entry #{i} ({p!r:.60}) is not a parameter "
                                f"(a graph node or an ev.nn Param)")
            out.append((name, p))
        return out
    raise ExprError(f"{who}: expected an ev.nn Module, a dict or a list of parameters, "
                    f"got {type(params).__name__}")


def value_of(name, p, who):
    v = p if isinstance(p, np.ndarray) else getattr(p, "value", None)
    if not isinstance(v, np.ndarray):
        raise ExprError(f"{who}: parameter {name!r} has no array value (is it an input?)")
    return v


def describe(entry):
    """'W' (4, 3) float64 -- one layout entry (name, shape, dtype str, *extra) for a message."""
    name, shape, dtype = entry[:3]
    extra = "".join(f" [{x}]" for x in entry[3:])
    return f"{name!r} {tuple(shape)} {np.dtype(dtype).name}{extra}"


def mismatch(layouts, what):
    """The lines saying how the ranks' layouts differ ([] if they are all equal).

    layouts[r] is rank r's list of entries (name, shape, dtype str, ...). Every rank
    holds all of them, so every rank writes the same message."""
    ref = layouts[0]
    lines = []
    for r, mine in enumerate(layouts[1:], start=1):
        if mine == ref:
            continue
        for i, (a, b) in enumerate(zip(ref, mine)):
            if a != b:
                lines.append(f"{what} #{i}: rank 0 has {describe(a)}, rank {r} has {describe(b)}")
                break
        else:
            longer, r_long = (ref, 0) if len(ref) > len(mine) else (mine, r)
            extra = describe(longer[min(len(ref), len(mine))])
            lines.append(f"rank 0 has {len(ref)} {what}s, rank {r} has {len(mine)} "
                         f"(the first extra one, on rank {r_long}: {extra})")
        if len(lines) >= 4:
            lines.append("...")
            break
    return lines
