"""More elementwise functions: log2, erf, elu, gelu (torch.nn.functional's names and
signatures), each with its numpy impl, VJP and test row side by side.

In: a float node or array. Out: the same shape and dtype.
"""
import math

import numpy as np

from ..core import Row, apply, defop, elementwise_rule, unary_rule
from ..errors import ExprError
from . import refs
from .argcheck import arg_errors

F34 = ("f", (3, 4), -3.0, 3.0)
POS34 = ("f", (3, 4), 0.5, 3.0)
LN2 = math.log(2.0)
SQRT1_2 = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
GELU_C = math.sqrt(2.0 / math.pi)   # the tanh approximation's constants (Hendrycks & Gimpel)
GELU_A = 0.044715

log2 = defop("log2", np.log2, unary_rule, vjp=(lambda g, ans, x: g / (x * LN2),),
             ufunc=np.log2, elementwise=True,
             row=Row((POS34,), ref=lambda x: np.log(x) / np.log(2.0)),
             doc="Base-2 logarithm, elementwise (numpy.log2).")

# -- erf ----------------------------------------------------------------------------
# NOTE: numpy has no erf. scipy's (a ufunc, Cephes) is used when scipy is installed;
# otherwise the C library's, through math.erf element by element (exact, but slow on
# large arrays). Both are libm-accurate, so results agree to the last bits. scipy is
# looked up on the first erf evaluated, not at import (importing scipy.special takes
# longer than importing the rest of exprvm).
_math_erf = np.frompyfunc(math.erf, 1, 1)
_ERF = []       # [scipy's erf or None], once looked up


def _scipy_erf():
    if not _ERF:
        try:
            from scipy.special import erf as scipy_erf
        except ImportError:     # pragma: no cover - depends on the environment
            scipy_erf = None
        _ERF.append(scipy_erf)
    return _ERF[0]


def _erf(x):
    x = np.asarray(x)
    fn = _scipy_erf()
    if fn is not None:
        return fn(x)
    return _math_erf(x).astype(x.dtype)


def _ref_erf(x):
    return refs.erf(x)


erf = defop("erf", _erf, unary_rule,
            vjp=(lambda g, ans, x: g * TWO_OVER_SQRT_PI * exp(-square(x)),),
            elementwise=True, row=Row((F34,), ref=_ref_erf),
            doc="The error function 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise.")

# -- elu --------------------------------------------------------------------------------


def _elu(x, alpha):
    x = np.asarray(x)
    # NOTE: expm1 only of the negative part: exp of a large positive x would overflow
    # (and warn) in the branch np.where throws away.
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


_elu_op = defop("elu", _elu, elementwise_rule,
                vjp=(lambda g, ans, x, alpha: where(x > 0, g, g * (ans + alpha)),), elementwise=True,
                row=Row((F34,), {"alpha": 0.7},
                        ref=lambda x, alpha: np.maximum(x, 0) + np.minimum(alpha * (np.exp(x) - 1), 0)))


def elu(x, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise (torch.nn.functional.elu)."""
    return apply("elu", x, alpha=float(alpha))

# -- gelu --------------------------------------------------------------------------------


def _gelu(x, approximate):
    x = np.asarray(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(GELU_C * (x + GELU_A * x * x * x)))
    return 0.5 * x * (1 + _erf(x * SQRT1_2))


def _gelu_vjp(g, ans, x, approximate):
    if approximate == "tanh":
        t = tanh(GELU_C * (x + GELU_A * cube(x)))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * square(x)))
    # d/dx x * Phi(x) = Phi(x) + x * phi(x), phi the standard normal density
    return g * (0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * exp(-0.5 * square(x)))


def _gelu_rule(x, approximate):
    return unary_rule(x)


def _ref_gelu(x, approximate):
    # x times the standard normal CDF, the CDF by its definition through erf
    cdf = 0.5 * (1 + _ref_erf(np.asarray(x, np.float64) / math.sqrt(2)))
    return x * cdf


_gelu_op = defop("gelu", _gelu, _gelu_rule, vjp=(_gelu_vjp,), elementwise=True,
                 row=Row((F34,), {"approximate": "none"}, ref=_ref_gelu))


def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF (torch.nn.functional.gelu); approximate="tanh"
    is the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    with arg_errors("gelu", x):
        if approximate not in ("none", "tanh"):
            raise ExprError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply("gelu", x, approximate=approximate)


from .elementwise import cube, exp, square, tanh, where  # noqa: E402
