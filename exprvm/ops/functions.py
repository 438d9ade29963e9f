"""The composite functions: public functions that are compositions of ops (reshape,
getitem, concat, where, ...), each exact and differentiable through its parts' VJPs.

A composite has no Op record of its own, so it has a test row here instead:
FUNCTIONS[name] = Composite(call, row), where call(*arrays, **row.params) calls the
public function (an adapter for functions that take a list) and row.ref is numpy's own
function or a formula apart from the composition. The function tables in the tests
run every row on both machines, in float32 and float64, with finite differences.
"""
import functools
from dataclasses import dataclass
from typing import Callable

from ..core import Row, lift

FUNCTIONS = {}


@dataclass(frozen=True)
class Composite:
    call: Callable
    row: Row


def composite(name, row, call=None, sequence=False):
    """Register the decorated public function as a composite with its test row; call
    adapts a row's arrays to the function's signature (default: the function itself).

    The function gets its positional operands through core.lift, as every op does
    through build_node: a list holding nodes is their stack (numpy's reading of a list).
    sequence=k (True: 1): the first k operands are sequences of arrays (hstack's tup,
    select's condlist and choicelist), whose items are lifted one by one."""
    def register(fn):
        if name in FUNCTIONS:
            raise ValueError(f"composite {name!r} is registered twice")

        @functools.wraps(fn)
        def lifted(*args, **kwargs):
            k = int(sequence)
            seqs = tuple([lift(a) for a in s] if isinstance(s, (list, tuple)) else s for s in args[:k])
            return fn(*seqs, *(lift(a) for a in args[k:]), **kwargs)
        FUNCTIONS[name] = Composite(call or lifted, row)
        return lifted
    return register


def listed(fn):
    """call adapter of a function taking one sequence of arrays: fn(list(arrays), **params)."""
    return lambda *xs, **params: fn(list(xs), **params)
