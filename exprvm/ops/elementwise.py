"""Elementwise ops: numpy reference, shape/dtype rule, VJP and test row side by side."""
import numpy as np

from ..errors import DTypeError
from ..kernels import KERNEL_OPS
from ..kernels.eager import eager_unary
from ..core.rules import batch_elementwise, neutral, passthrough
from . import refs
from ..core import (OPS, Row, apply, binary_rule, build_node, integer_or_binary_rule, broadcast, compare_rule, defop, elementwise_rule,
                       unary_rule, unbroadcast as ub)

F34 = ("f", (3, 4), -2.0, 2.0)
POS34 = ("f", (3, 4), 0.5, 2.0)
F4 = ("f", (4,), -2.0, 2.0)
POS4 = ("f", (4,), 0.5, 2.0)


def unary(name, impl, vjp, domain=F34, ref=None, ufunc=None, grad=True):
    # NOTE: an op with a C kernel evaluates big arrays with it (the LispMachine's walk too)
    eager = eager_unary(name, impl) if name in KERNEL_OPS else None
    return defop(name, impl, unary_rule, vjp=(vjp,) if vjp else None,
                 row=Row((domain,), ref=ref, grad=grad and vjp is not None),
                 ufunc=ufunc, elementwise=True, eager=eager)


# NOTE: the gradient of an op with a kernel (exprvm.kernels.KERNEL_OPS) is one
# unary_grad node (ops/internal.py) built right here, so the compiler runs it as one
# kernel without recognising any formula. Such an op's gradient reads only its
# result (ans) or only its input (x), and is passed that operand twice.
# (build_node on the op record: apply's frame and argument packing cost a fifth of a node)
def grad_from_ans(op):
    return lambda g, ans, x: build_node(OPS["unary_grad"], (ans, ans, g), {"op": op})


def grad_from_x(op):
    return lambda g, ans, x: build_node(OPS["unary_grad"], (x, x, g), {"op": op})


def binary(name, impl, vjp_x, vjp_y, args=(F34, F4), ufunc=None, identity=None, ref=None,
           rule=binary_rule):
    return defop(name, impl, rule, vjp=(vjp_x, vjp_y), row=Row(args, ref=ref),
                 ufunc=ufunc, elementwise=True, identity=identity)


# -- arithmetic --------------------------------------------------------------------
add = binary("add", np.add,
             lambda g, ans, x, y: ub(g, x.shape),
             lambda g, ans, x, y: ub(g, y.shape), ufunc=np.add, identity=neutral(0),
             ref=refs.elementwise(lambda x, y: x + y),
             rule=integer_or_binary_rule)
subtract = binary("sub", np.subtract,
                  lambda g, ans, x, y: ub(g, x.shape),
                  lambda g, ans, x, y: ub(-g, y.shape), ufunc=np.subtract,
                  identity=neutral(0, commutative=False), ref=lambda x, y: x + (-y),
                  rule=integer_or_binary_rule)
multiply = binary("mul", np.multiply,
                  lambda g, ans, x, y: ub(g * y, x.shape),
                  lambda g, ans, x, y: ub(g * x, y.shape), ufunc=np.multiply,
                  identity=neutral(1), ref=refs.elementwise(lambda x, y: x * y),
                  rule=integer_or_binary_rule)
divide = binary("div", np.divide,
                lambda g, ans, x, y: ub(g / y, x.shape),
                lambda g, ans, x, y: ub(-g * ans / y, y.shape), args=(F34, POS4), ufunc=np.divide,
                ref=refs.elementwise(lambda x, y: x / y))
# NOTE: at base 0 the textbook forms are 0 * inf: y * x ** (y - 1) with y = 0, and
# ans * log(x). The exponent y - 1 becomes 1 where y == 0 (y times anything finite is 0
# there), and log reads 1 where x == 0 (ans is 0 there for y > 0): both gradients are 0,
# as numpy-based autodiff defines them, and every operand stays finite for grad-of-grad.
power = binary("pow", np.power,
               lambda g, ans, x, y: ub(g * y * x ** where(not_equal(y, 0), y - 1, 1), x.shape),
               lambda g, ans, x, y: ub(g * ans * log(where(equal(x, 0), 1, x)), y.shape),
               args=(POS34, ("f", (4,), -1.0, 2.0)), ufunc=np.power,
               ref=lambda x, y: np.exp(y * np.log(x)))
# NOTE: at a tie the gradient goes to x only, so it is never counted twice.
maximum = binary("maximum", np.maximum,
                 lambda g, ans, x, y: ub(where(x >= y, g, 0), x.shape),
                 lambda g, ans, x, y: ub(where(x < y, g, 0), y.shape), ufunc=np.maximum,
                 ref=lambda x, y: np.where(x >= y, x, y),
                 rule=integer_or_binary_rule)
minimum = binary("minimum", np.minimum,
                 lambda g, ans, x, y: ub(where(x <= y, g, 0), x.shape),
                 lambda g, ans, x, y: ub(where(x > y, g, 0), y.shape), ufunc=np.minimum,
                 ref=lambda x, y: np.where(x <= y, x, y),
                 rule=integer_or_binary_rule)

negative = unary("neg", np.negative, lambda g, ans, x: -g, ufunc=np.negative, ref=lambda x: 0 - x)
abs = unary("abs", np.abs, lambda g, ans, x: g * sign(x), ufunc=np.abs,
            ref=lambda x: np.where(x < 0, -x, x))
sign = unary("sign", np.sign, None, ufunc=np.sign, ref=refs.sign)

# -- transcendental -------------------------------------------------------------------
exp = unary("exp", np.exp, grad_from_ans("exp"), ufunc=np.exp, ref=lambda x: np.e ** x)
log = unary("log", np.log, lambda g, ans, x: g / x, domain=POS34, ufunc=np.log,
            ref=lambda x: np.log2(x) * np.log(2.0))
log1p = unary("log1p", np.log1p, grad_from_x("log1p"), domain=POS34,
              ref=lambda x: np.log(1 + x), ufunc=np.log1p)
expm1 = unary("expm1", np.expm1, grad_from_ans("expm1"),
              ref=lambda x: np.exp(x) - 1, ufunc=np.expm1)
sqrt = unary("sqrt", np.sqrt, lambda g, ans, x: g * 0.5 / ans, domain=POS34, ufunc=np.sqrt,
             ref=lambda x: x ** 0.5)
square = unary("square", np.square, grad_from_x("square"),
               ref=lambda x: x * x, ufunc=np.square)
cube = unary("cube", lambda x: x * x * x, grad_from_x("cube"), ref=lambda x: x ** 3)
sin = unary("sin", np.sin, lambda g, ans, x: g * cos(x), ufunc=np.sin,
            ref=lambda x: np.exp(1j * x).imag)
cos = unary("cos", np.cos, lambda g, ans, x: -g * sin(x), ufunc=np.cos,
            ref=lambda x: np.exp(1j * x).real)
tanh = unary("tanh", np.tanh, grad_from_ans("tanh"),
             ref=lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1), ufunc=np.tanh)


def _sigmoid(x):
    # Stable for both signs: exp never sees a large positive argument.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


sigmoid = unary("sigmoid", _sigmoid, grad_from_ans("sigmoid"), ref=lambda x: 1 / (1 + np.exp(-x)))
softplus = unary("softplus", lambda x: np.logaddexp(0, x), grad_from_x("softplus"),
                 ref=lambda x: np.log(1 + np.exp(x)))
relu = unary("relu", lambda x: np.maximum(x, 0), grad_from_x("relu"), ref=lambda x: x * (x > 0))
_leaky_relu = defop(
    "leaky_relu", lambda x, alpha=0.01: np.where(x > 0, x, alpha * x), elementwise_rule,
    vjp=(lambda g, ans, x, alpha=0.01: where(x > 0, g, alpha * g),),
    row=Row((F34,), {"alpha": 0.1}, ref=lambda x, alpha: np.maximum(x, alpha * x)), elementwise=True)


def leaky_relu(x, alpha=0.01):
    """``x`` where ``x > 0``, else ``alpha * x``, elementwise.

    Parameters
    ----------
    x : Node or array
    alpha : float, default 0.01
        The slope below zero.

    Returns
    -------
    Node or numpy.ndarray
    """
    return apply("leaky_relu", x, alpha=float(alpha))

# -- comparisons (not differentiable) -----------------------------------------------


def compare(name, impl, ref):
    return defop(name, impl, compare_rule, row=Row((F34, F4), grad=False, ref=ref), ufunc=impl)


# NOTE: the references compare through a difference: with gradual underflow, x - y is 0
# exactly when x == y.
less = compare("lt", np.less, lambda x, y: y - x > 0)
less_equal = compare("le", np.less_equal, lambda x, y: y - x >= 0)
greater = compare("gt", np.greater, lambda x, y: x - y > 0)
greater_equal = compare("ge", np.greater_equal, lambda x, y: x - y >= 0)
equal = compare("eq", np.equal, lambda x, y: x - y == 0)
not_equal = compare("ne", np.not_equal, lambda x, y: x - y != 0)


def _where_rule(c, x, y):
    if c.dtype != np.dtype(bool):
        raise DTypeError(f"condition must be bool, got {c.dtype.name}")
    shape = broadcast(c, x, y)
    if x.dtype == y.dtype and x.dtype.kind in "iub":     # integers chosen (a loop's counters)
        return shape, x.dtype
    return shape, elementwise_rule(x, y)[1]


where = defop("where", np.where, _where_rule,
              vjp=(None,
                   lambda g, ans, c, x, y: ub(where(c, g, 0), x.shape),
                   lambda g, ans, c, x, y: ub(where(c, 0, g), y.shape)),
              row=Row((("b", (3, 4)), F34, F4), ref=lambda c, x, y: x * c + y * ~c),
              batch=batch_elementwise)


def _astype_rule(x, dtype):
    return x.shape, np.dtype(dtype)


_astype = defop("astype", lambda x, dtype: np.asarray(x).astype(dtype), _astype_rule,
               vjp=(lambda g, ans, x, dtype: astype(g, x.dtype),),
               row=Row((F34,), {"dtype": "float64"},
                       ref=lambda x, dtype: np.array(x.tolist(), dtype=dtype)), identity=passthrough)


def astype(x, dtype):
    """Cast to dtype; the gradient is cast back (the one sanctioned way to mix float32 and float64)."""
    return apply("astype", x, dtype=np.dtype(dtype))
