"""Eager kernels: a kernel op evaluated on arrays (the LispMachine's walk, an op function
called with arrays) runs its C kernel when the array is big enough for the call's checks
to pay, and the op's numpy reference otherwise.

    eager_unary("tanh", np.tanh)          # fn(x) -> array
    eager_unary_grad(reference_grad)      # fn(x, ans, g, op) -> array

The C kernels agree with numpy to a few ulp (csrc/ev_math.h), so the walk and the tape
compute the same values as the TapeMachine's C backend does.
"""
import numpy as np

from exprvm.kernels import dispatch
from exprvm.kernels.checks import KERNEL_DTYPES

# NOTE: below this many elements numpy's own ufunc call (~0.5 us) beats the checked C
# call (~2 us of argument checks); above it the C kernel wins (sigmoid on 10^6 float32:
# 0.25 ms against ~7 ms for the overflow-free numpy form).
MIN_SIZE = 4096


def _c_ready(x, op):
    return (type(x) is np.ndarray and x.size >= MIN_SIZE and x.dtype in KERNEL_DTYPES
            and dispatch.get_backend() == "c" and dispatch.available(op, x.dtype, "c"))


def eager_unary(op, impl):
    """fn(x): kernel op `op` on x, by its C kernel for big float arrays, else impl(x)."""
    def run(x):
        if _c_ready(x, op):
            return dispatch.unary(op, x.dtype, "c")(x)
        return impl(x)
    run.__name__ = op
    run.__doc__ = impl.__doc__
    return run


def eager_unary_grad(impl):
    """fn(x, ans, g, op): op's gradient, by its C kernel for big same-shaped float arrays,
    else impl(x, ans, g, op)."""
    def run(x, ans, g, op):
        if (_c_ready(x, op) and type(ans) is np.ndarray and type(g) is np.ndarray
                and x.shape == ans.shape == g.shape and x.dtype == ans.dtype == g.dtype):
            return dispatch.unary_grad(op, x.dtype, "c")(x, ans, g)
        return impl(x, ans, g, op)
    return run
