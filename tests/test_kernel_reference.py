"""The kernels' numpy reference agrees with the op registry: the forward with each
op's impl, the gradient with each op's VJP evaluated eagerly. One truth."""
import numpy as np
import pytest

from exprvm import kernels
from exprvm.kernels import reference
from exprvm.core import OPS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
def test_kernel_reference_matches_the_op_registry(op, dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 1001).astype(dtype)
    if op == "log1p":
        x = np.abs(x)
    g = rng.normal(size=x.shape).astype(dtype)
    spec = OPS[op]
    assert spec.kernel == op, f"op {op} does not name its kernel"
    ans = np.asarray(spec.impl(x))
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(reference.FORWARD[op](x, np.empty_like(x)), ans, **tol)
    vjp = spec.input_vjp(0, g, ans, (x,), {})
    np.testing.assert_allclose(reference.GRAD[op](x, ans, g, np.empty_like(x)), vjp, **tol)


def test_every_registry_op_with_a_kernel_has_one():
    named = sorted(name for name, spec in OPS.items() if spec.kernel)
    assert named == sorted(kernels.KERNEL_OPS)
