"""The kernels' numpy reference agrees with the op registry and with calculus: the
forward with each op's impl, the gradient with a derivative written apart from both
(and with central differences), and every kernel op's VJP is its unary_grad op."""
import numpy as np
import pytest

import exprvm as ev
from exprvm import kernels
from exprvm.compiler.lowering import has_row
from exprvm.core import OPS
from exprvm.kernels import reference

# d op(x) / dx as a function of x, written independently of reference.GRAD
DERIVATIVE = {
    "tanh": lambda x: 1 / np.cosh(x) ** 2,
    "sigmoid": lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
    "exp": np.exp,
    "expm1": np.exp,
    "log1p": lambda x: 1 / (1 + x),
    "cube": lambda x: 3 * x ** 2,
    "square": lambda x: 2 * x,
    "relu": lambda x: (x > 0).astype(x.dtype),
    "softplus": lambda x: 1 / (1 + np.exp(-x)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
def test_kernel_reference_matches_the_op_and_calculus(op, dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 1001).astype(dtype)
    if op == "log1p":
        x = np.abs(x)
    g = rng.normal(size=x.shape).astype(dtype)
    ans = np.asarray(OPS[op].impl(x))
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(reference.FORWARD[op](x, np.empty_like(x)), ans, **tol)
    want = g * DERIVATIVE[op](x.astype(np.float64))
    np.testing.assert_allclose(reference.GRAD[op](x, ans, g, np.empty_like(x)), want, **tol)
    # and central differences of the op's own impl, in float64
    x64 = x.astype(np.float64)
    h = 1e-6
    keep = np.abs(x64) > 1e-3        # relu's kink
    fd = (OPS[op].impl(x64 + h) - OPS[op].impl(x64 - h)) / (2 * h)
    np.testing.assert_allclose(DERIVATIVE[op](x64)[keep], fd[keep], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
def test_every_kernel_op_differentiates_to_its_unary_grad_and_has_its_kernels(op):
    g = ev.Graph()
    x = g.vector("x", 4, value=np.linspace(0.1, 1, 4))
    gx = ev.grad(ev.sum(ev.apply(op, x)), x)
    assert gx.op == "unary_grad" and gx.params["op"] == op
    assert has_row(op, "c") and has_row(op, "cuda")
