"""numpy's trigonometric, hyperbolic, logarithmic and exponential ufuncs beyond the
core set: each a numpy ufunc with its shape rule, VJP (written with ev functions, so
grad-of-grad works) and a test row whose ref takes another route (complex
exponentials, logs of sums).

In: float nodes or arrays (binary ones broadcast). Out: the same dtype.
"""
import math

import numpy as np

from ..core import Row, binary_rule, defop, unary_rule
from .functions import composite

LN2, LN10 = math.log(2.0), math.log(10.0)
F = ("f", (3, 4), -2.0, 2.0)
UNIT = ("f", (3, 4), -0.9, 0.9)         # inside (-1, 1): arcsin, arccos, arctanh
F4 = ("f", (4,), -2.0, 2.0)


def _unary(name, uf, vjp, domain=F, ref=None):
    return defop(name, uf, unary_rule, vjp=(vjp,), ufunc=uf, elementwise=True,
                 row=Row((domain,), ref=ref), doc=f"numpy.{uf.__name__}, elementwise.")


def _binary(name, uf, vjp_x, vjp_y, args=(F, F4), ref=None):
    return defop(name, uf, binary_rule, vjp=(vjp_x, vjp_y), ufunc=uf, elementwise=True,
                 row=Row(args, ref=ref), doc=f"numpy.{uf.__name__}, elementwise with broadcasting.")


# -- hyperbolic and trigonometric ----------------------------------------------------------
sinh = _unary("sinh", np.sinh, lambda g, ans, x: g * cosh(x), ref=lambda x: (np.exp(x) - np.exp(-x)) / 2)
cosh = _unary("cosh", np.cosh, lambda g, ans, x: g * sinh(x), ref=lambda x: (np.exp(x) + np.exp(-x)) / 2)
tan = _unary("tan", np.tan, lambda g, ans, x: g * (1 + ans * ans), domain=("f", (3, 4), -1.2, 1.2),
             ref=lambda x: np.sin(x) / np.cos(x))
arcsin = _unary("arcsin", np.arcsin, lambda g, ans, x: g / sqrt(1 - x * x), domain=UNIT,
                ref=lambda x: np.arctan2(x, np.sqrt(1 - x * x)))
arccos = _unary("arccos", np.arccos, lambda g, ans, x: -g / sqrt(1 - x * x), domain=UNIT,
                ref=lambda x: np.arctan2(np.sqrt(1 - x * x), x))
arctan = _unary("arctan", np.arctan, lambda g, ans, x: g / (1 + x * x),
                ref=lambda x: np.angle(1 + 1j * x))
arcsinh = _unary("arcsinh", np.arcsinh, lambda g, ans, x: g / sqrt(x * x + 1),
                 ref=lambda x: np.sign(x) * np.log(np.abs(x) + np.sqrt(x * x + 1)))
arccosh = _unary("arccosh", np.arccosh, lambda g, ans, x: g / sqrt(x * x - 1),
                 domain=("f", (3, 4), 1.2, 3.0), ref=lambda x: np.log(x + np.sqrt(x * x - 1)))
arctanh = _unary("arctanh", np.arctanh, lambda g, ans, x: g / (1 - x * x), domain=UNIT,
                 ref=lambda x: 0.5 * np.log((1 + x) / (1 - x)))
arctan2 = _binary("arctan2", np.arctan2,
                  lambda g, ans, y, x: ub(g * x / (x * x + y * y), y.shape),
                  lambda g, ans, y, x: ub(-g * y / (x * x + y * y), x.shape),
                  ref=lambda y, x: np.angle(x + 1j * y))


def _hypot_vjp(which):
    # NOTE: at (0, 0) the hypot has no derivative; its subgradient 0 is taken there
    def vjp(g, ans, x, y):
        v = (x, y)[which]
        return ub(where(ans > 0, g * v / where(ans > 0, ans, 1), 0), v.shape)
    return vjp


hypot = _binary("hypot", np.hypot, _hypot_vjp(0), _hypot_vjp(1), ref=lambda x, y: np.sqrt(x * x + y * y))

# -- logarithms and exponentials -----------------------------------------------------------
log10 = _unary("log10", np.log10, lambda g, ans, x: g / (x * LN10), domain=("f", (3, 4), 0.2, 3.0),
               ref=lambda x: np.log(x) / np.log(10.0))
exp2 = _unary("exp2", np.exp2, lambda g, ans, x: g * ans * LN2, ref=lambda x: np.exp(x * np.log(2.0)))
logaddexp = _binary("logaddexp", np.logaddexp,
                    lambda g, ans, x, y: ub(g * exp(x - ans), x.shape),
                    lambda g, ans, x, y: ub(g * exp(y - ans), y.shape),
                    ref=lambda x, y: np.log(np.exp(x) + np.exp(y)))
logaddexp2 = _binary("logaddexp2", np.logaddexp2,
                     lambda g, ans, x, y: ub(g * exp2(x - ans), x.shape),
                     lambda g, ans, x, y: ub(g * exp2(y - ans), y.shape),
                     ref=lambda x, y: np.log2(2.0 ** x + 2.0 ** y))
reciprocal = _unary("reciprocal", np.reciprocal, lambda g, ans, x: -g * ans * ans,
                    domain=("f", (3, 4), 0.5, 2.0), ref=lambda x: x ** -1.0)

# -- sinc ------------------------------------------------------------------------------------


def _sinc_vjp(g, ans, x):
    # d/dx sin(pi x) / (pi x) = (cos(pi x) - sinc(x)) / x, and 0 at x = 0 (an even function)
    zero = equal(x, 0)
    return where(zero, 0, g * (cos(np.pi * x) - ans) / where(zero, 1, x))


def _ref_sinc(x):
    t = np.pi * np.where(x == 0, 1, x)
    return np.where(x == 0, 1, np.sin(t) / t)


sinc = defop("sinc", np.sinc, unary_rule, vjp=(_sinc_vjp,), elementwise=True,
             row=Row((F,), ref=_ref_sinc),
             doc="The normalized sinc, sin(pi x) / (pi x) and 1 at 0 (numpy.sinc).")

# -- angles: a product with a constant -----------------------------------------------------


@composite("deg2rad", Row((("f", (3, 4), -360.0, 360.0),), ref=lambda x: x / 180.0 * np.pi))
def deg2rad(x):
    """Degrees to radians, x * (pi / 180) (numpy.deg2rad, numpy.radians)."""
    return x * (np.pi / 180.0)


@composite("rad2deg", Row((F,), ref=lambda x: x / np.pi * 180.0))
def rad2deg(x):
    """Radians to degrees, x * (180 / pi) (numpy.rad2deg, numpy.degrees)."""
    return x * (180.0 / np.pi)


radians, degrees = deg2rad, rad2deg


@composite("fabs", Row((F,), ref=lambda x: np.sqrt(x * x)))
def fabs(x):
    """Absolute value of a float operand (numpy.fabs): ev.abs."""
    return abs(x)


from ..core import unbroadcast as ub  # noqa: E402
from .elementwise import abs, cos, equal, exp, sqrt, where  # noqa: E402
