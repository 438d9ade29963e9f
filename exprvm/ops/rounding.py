"""Rounding ops: floor, ceil, round. Piecewise constant, so their gradient is zero.

In: a float node or array. Out: the same shape and dtype, rounded (round: half to
even, numpy's rule, with numpy's decimals=).

NOTE: the VJP returns zeros rather than nothing: a parameter reached only through
a rounding op gets a zero .grad on both machines (an op without a VJP would leave
the LispMachine's .grad unset), and finite differences agree with zero away from
the jumps.
"""
import numpy as np

from ..core import Node, Row, apply, defop, unary_rule

F34 = ("f", (3, 4), -3.0, 3.0)


def zeros_like(x):
    """Zeros of x's shape and dtype: a node for a node (a broadcast constant), else an array."""
    if isinstance(x, Node):
        return apply("broadcast_to", x.graph.constant(0.0, dtype=x.dtype), shape=x.shape)
    x = np.asarray(x)
    return np.zeros(x.shape, x.dtype)


def _zero_vjp(g, ans, x, **params):
    return zeros_like(g)


def _ref_floor(x):
    t = np.trunc(x)                       # trunc moves toward zero: one down for negatives
    return t - ((x < 0) & (t != x))


def _ref_round(x, decimals):
    s = x * 10.0 ** decimals
    f = _ref_floor(s)
    d = s - f
    odd = np.abs(np.fmod(f, 2)) == 1
    return (f + ((d > 0.5) | ((d == 0.5) & odd))) / 10.0 ** decimals


floor = defop("floor", np.floor, unary_rule, vjp=(_zero_vjp,), ufunc=np.floor, elementwise=True,
              row=Row((F34,), ref=_ref_floor),
              doc="Largest integer <= x, elementwise (numpy.floor); zero gradient.")
ceil = defop("ceil", np.ceil, unary_rule, vjp=(_zero_vjp,), ufunc=np.ceil, elementwise=True,
             row=Row((F34,), ref=lambda x: -_ref_floor(-x)),
             doc="Smallest integer >= x, elementwise (numpy.ceil); zero gradient.")


def _round_rule(x, decimals):
    return unary_rule(x)


_round = defop("round", lambda x, decimals: np.round(x, decimals), _round_rule,
               vjp=(_zero_vjp,), elementwise=True,
               row=Row((("f", (3, 4), -30.0, 30.0),), {"decimals": 1}, ref=_ref_round))


def round(x, decimals=0):
    """Round half to even to `decimals` places (numpy.round); zero gradient."""
    return apply("round", x, decimals=int(decimals))
