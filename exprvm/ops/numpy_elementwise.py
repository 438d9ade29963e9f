"""numpy's remainders, NaN-ignoring extremes and nan_to_num: ufuncs with their shape
rules, VJPs and test rows.

mod / remainder (Python's %, the sign of the divisor) and fmod (C's, the sign of the
dividend) are x - k * y for an integer k that is constant between jumps, so their
gradients are g and -g * k (k = floor(x / y) or trunc(x / y)). fmax / fmin pass the
gradient to the operand they return (x on a tie, and the number when the other is NaN).
nan_to_num passes it where x is finite.

In: float nodes or arrays. Out: the same dtype.
"""
import numpy as np

from ..core import Row, apply, binary_rule, broadcast, defop, unary_rule
from ..core import unbroadcast as ub
from ..errors import UnsupportedError
from .argcheck import arg_errors

F = ("f", (3, 4), -3.0, 3.0)
# NOTE: divisors away from 0 and from the points where x / y is an integer (the jumps):
# the rows' finite differences are taken there.
Y = ("f", (4,), 0.7, 1.3)

trunc = defop("trunc", np.trunc, unary_rule, vjp=(lambda g, ans, x: g * 0.0,), ufunc=np.trunc,
              elementwise=True, row=Row((F,), ref=lambda x: np.sign(x) * np.floor(np.abs(x))),
              doc="The integer part of x, toward zero (numpy.trunc, numpy.fix); zero gradient.")
fix = trunc

remainder = defop("remainder", np.remainder, binary_rule, ufunc=np.remainder, elementwise=True,
                  vjp=(lambda g, ans, x, y: ub(g, x.shape),
                       lambda g, ans, x, y: ub(-g * floor(x / y), y.shape)),
                  row=Row((F, Y), ref=lambda x, y: x - np.floor(x / y) * y),
                  doc="x - floor(x / y) * y, the sign of y (numpy.remainder, numpy.mod, %).")
mod = remainder

fmod = defop("fmod", np.fmod, binary_rule, ufunc=np.fmod, elementwise=True,
             vjp=(lambda g, ans, x, y: ub(g, x.shape),
                  lambda g, ans, x, y: ub(-g * trunc(x / y), y.shape)),
             row=Row((F, Y), ref=lambda x, y: x - np.sign(x / y) * np.floor(np.abs(x / y)) * y),
             doc="x - trunc(x / y) * y, the sign of x (numpy.fmod, C's fmod).")


def _takes_x(x, y, max_):
    """Where fmax (max_) / fmin returns x: x wins its comparison (a tie included) or y is NaN."""
    return logical_or(greater_equal(x, y) if max_ else less_equal(x, y), not_equal(y, y))


def _extreme(name, uf, max_):
    ref_pick = (lambda x, y: np.where((x >= y) | np.isnan(y), x, y)) if max_ else \
        (lambda x, y: np.where((x <= y) | np.isnan(y), x, y))
    return defop(name, uf, binary_rule, ufunc=uf, elementwise=True,
                 vjp=(lambda g, ans, x, y: ub(where(_takes_x(x, y, max_), g, 0), x.shape),
                      lambda g, ans, x, y: ub(where(_takes_x(x, y, max_), 0, g), y.shape)),
                 row=Row((F, ("f", (4,), -3.0, 3.0)), ref=ref_pick),
                 doc=f"numpy.{name}: the {'larger' if max_ else 'smaller'} operand, ignoring a NaN "
                     f"(the gradient goes to x on a tie).")


fmax = _extreme("fmax", np.fmax, True)
fmin = _extreme("fmin", np.fmin, False)

# -- logical ops and float classes (bool results, no gradient) ----------------------------
B = ("b", (3, 4))


def _bool_rule(*xs):
    return broadcast(*xs), np.dtype(bool)


def _logical(name, uf, args, ref):
    return defop(name, uf, _bool_rule, ufunc=uf, row=Row(args, grad=False, ref=ref),
                 doc=f"numpy.{name}, elementwise (a bool result, no gradient).")


logical_and = _logical("logical_and", np.logical_and, (B, ("b", (4,))), lambda a, b: (a * b) > 0)
logical_or = _logical("logical_or", np.logical_or, (B, ("b", (4,))), lambda a, b: (a + b * 1) > 0)
logical_xor = _logical("logical_xor", np.logical_xor, (B, ("b", (4,))), lambda a, b: a != b)
logical_not = _logical("logical_not", np.logical_not, (B,), lambda a: a == 0)


def _ref_classes(x):
    return np.asarray(x) != np.asarray(x)


isnan = _logical("isnan", np.isnan, (F,), _ref_classes)
isinf = _logical("isinf", np.isinf, (F,), lambda x: np.abs(x) == np.inf)
isfinite = _logical("isfinite", np.isfinite, (F,), lambda x: (x - x) == 0)

# -- nan_to_num ------------------------------------------------------------------------------


def _nan_to_num(x, nan, posinf, neginf):
    return np.nan_to_num(x, copy=True, nan=nan, posinf=posinf, neginf=neginf)


def _ntn_rule(x, nan, posinf, neginf):
    return unary_rule(x)


def _finite(x):
    return equal(x - x, 0)      # x - x is NaN exactly for NaN and +-inf


def _ref_ntn(x, nan, posinf, neginf):
    big = np.finfo(x.dtype)
    out = np.where(x != x, nan, x)
    out = np.where(out == np.inf, big.max if posinf is None else posinf, out)
    return np.where(out == -np.inf, big.min if neginf is None else neginf, out).astype(x.dtype)


_ntn = defop("nan_to_num", _nan_to_num, _ntn_rule, elementwise=True,
             vjp=(lambda g, ans, x, nan, posinf, neginf: where(_finite(x), g, 0),),
             row=Row((F,), {"nan": 0.5, "posinf": None, "neginf": -7.0}, ref=_ref_ntn))


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """numpy.nan_to_num: NaN to nan, +inf to posinf, -inf to neginf (None: the dtype's
    largest / smallest number); the gradient passes where x is finite. copy must be True
    (a node is never changed in place)."""
    with arg_errors("nan_to_num", x):
        if copy is not True:
            raise UnsupportedError("copy=False (in place) is not supported: nodes are immutable")
    return apply("nan_to_num", x, nan=float(nan), posinf=None if posinf is None else float(posinf),
                 neginf=None if neginf is None else float(neginf))


from .elementwise import equal, greater_equal, less_equal, not_equal, where  # noqa: E402
from .rounding import floor  # noqa: E402
