"""The scalar C formula of every elementwise op: how a fused kernel computes one member.

In: an op's operands as C expressions (names of already computed scalars), the element
type, the op's params. Out: one C expression. compiler/fusion.py asks `formula` for each
member of a group and exprvm/kernels/generated.py writes the loop around them.

    SCALAR["add"]      -> "(a + b)"
    SCALAR["tanh"]     -> "EVM_KEEP_F32(evm_tanh_f32(a))"   (csrc/ev_math.h: numpy's NaN/Inf, <= 4 ulp)
    SCALAR["unary_grad"], op="sigmoid" -> "EVM_KEEP_F32(evm_sigmoid_grad_f32(x, ans, g))"

The arithmetic is IEEE single operations in numpy's order: a product is EVM_MUL_F32(a, b)
(kernels/generated.py), which the compiler cannot contract with an add, so a * b + c
rounds twice, as numpy does; exp, tanh, sigmoid, expm1, log1p and softplus (and the
kernel ops' gradients) are ev_math.h's compiled as the C kernels are, so they round as
the C kernels do, to the last bit (their values pass through EVM_KEEP_F32, so that one
ending in a product is not contracted into the member reading it); log, sqrt, pow,
sin, cos are libm's (correctly rounded or within 1 ulp, with IEEE NaN/Inf).
A comparison yields a C int (0/1), which only `where` and other members read: a fused
kernel stores floats only.
"""
import math

import numpy as np

from ...kernels.reference import KERNEL_OPS

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


class CType:
    """The element type of a fused kernel: C name, ev_math suffix, libm suffix."""

    __slots__ = ("dtype", "c", "sfx", "libm")

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (F32, F64):
            raise TypeError(f"fused kernels take float32 or float64, not {self.dtype}")
        single = self.dtype == F32
        self.c, self.sfx, self.libm = ("float", "f32", "f") if single else ("double", "f64", "")

    def lit(self, value):
        """A C literal of exactly `value` in this type (hex floats: no decimal rounding)."""
        v = float(value)
        if math.isnan(v):
            return f"(({self.c})NAN)"
        if math.isinf(v):
            return f"(({self.c}){'-' if v < 0 else ''}INFINITY)"
        if self.dtype == F32:
            v = float(np.float32(v))
            return f"({v.hex()}f)"
        return f"({v.hex()})"


SCALAR = {}     # op -> (formula(args, t, **params) -> C expression, result "T" or "bool")


def scalar(op, result="T"):
    def register(fn):
        SCALAR[op] = (fn, result)
        return fn
    return register


def _binary(op, sym):
    scalar(op)(lambda a, t: f"({a[0]} {sym} {a[1]})")


def _kept(expr, t):
    """An ev_math call's value, which may end in a product: kept from being contracted
    into a following add (EVM_KEEP_F32, kernels/generated.py), as a C kernel's stored
    result is."""
    return f"EVM_KEEP_{t.sfx.upper()}({expr})"


def _call(op, name):
    scalar(op)(lambda a, t: _kept(f"{name}_{t.sfx}({a[0]})", t))


def _libm(op, name):
    scalar(op)(lambda a, t: f"{name}{t.libm}({a[0]})")


def _compare(op, sym):
    scalar(op, result="bool")(lambda a, t: f"({a[0]} {sym} {a[1]})")


for _op, _sym in (("add", "+"), ("sub", "-"), ("div", "/")):
    _binary(_op, _sym)
for _op in ("exp", "expm1", "log1p", "tanh", "sigmoid", "softplus", "relu"):
    _call(_op, "evm_" + _op)
for _op in ("log", "sqrt", "sin", "cos"):
    _libm(_op, _op)
for _op, _sym in (("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("eq", "=="), ("ne", "!=")):
    _compare(_op, _sym)

# NOTE: numpy's power with a scalar exponent of 0.5 is a square root (its loops take that
# path: power(-inf, 0.5) is NaN, where C's pow gives inf); a literal 0.5 does the same here.
scalar("pow")(lambda a, t: f"sqrt{t.libm}({a[0]})" if a[1] == t.lit(0.5) else f"pow{t.libm}({a[0]}, {a[1]})")
scalar("neg")(lambda a, t: f"(-{a[0]})")
scalar("abs")(lambda a, t: f"fabs{t.libm}({a[0]})")
def _mul(x, y, t):
    """The product x * y, rounded once and never contracted into a multiply-add."""
    return f"EVM_MUL_{t.sfx.upper()}({x}, {y})"


scalar("mul")(lambda a, t: _mul(a[0], a[1], t))
scalar("square")(lambda a, t: _mul(a[0], a[0], t))
scalar("cube")(lambda a, t: _mul(_mul(a[0], a[0], t), a[0], t))
scalar("copy")(lambda a, t: a[0])
# NOTE: numpy's maximum/minimum propagate a NaN from either side and, on equal values
# (+0 and -0), return the second operand; fmax/fmin would drop the NaN.
scalar("maximum")(lambda a, t: f"(({a[0]} > {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]})")
scalar("minimum")(lambda a, t: f"(({a[0]} < {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]})")
# sign: +-1, 0 for +-0, NaN for NaN (numpy's np.sign)
scalar("sign")(lambda a, t: f"({a[0]} > 0 ? {t.lit(1)} : ({a[0]} < 0 ? {t.lit(-1)} : "
                            f"({a[0]} == {a[0]} ? {t.lit(0)} : {a[0]})))")
scalar("where")(lambda a, t: f"({a[0]} ? {a[1]} : {a[2]})")


@scalar("leaky_relu")
def _leaky_relu(a, t, alpha=0.01):
    return f"({a[0]} > 0 ? {a[0]} : {_mul(t.lit(alpha), a[0], t)})"


@scalar("unary_grad")
def _unary_grad(a, t, op):
    return _kept(f"evm_{op}_grad_{t.sfx}({a[0]}, {a[1]}, {a[2]})", t)


_KERNEL_PARAM = ("unary_grad",)


def fusable(op, params):
    """Can a member of op with these params be written as a scalar formula?"""
    if op not in SCALAR:
        return False
    if op in _KERNEL_PARAM:
        return set(params) == {"op"} and params["op"] in KERNEL_OPS
    if op == "leaky_relu":
        return set(params) <= {"alpha"}
    return not params


def result_kind(op):
    """"T" (the kernel's float type) or "bool" (a comparison)."""
    return SCALAR[op][1]


def formula(op, args, t, params):
    """The C expression of op over the C expressions args, in element type t (a CType)."""
    return SCALAR[op][0](list(args), t, **params)
