"""The norms numpy.linalg.norm offers beyond ord None / 1 / 2 / inf of a vector
(statistics.py): vector p-norms for any p > 0 (ord=3, 4, 0.5, ...), and the matrix
norms over two axes: "nuc" (the sum of singular values), 2 (the largest), 1 and inf
(the largest column / row sum of absolute values, compositions of sum and max).

In: a float node or array. Out: the reduced norm, same dtype.
"""
import numpy as np

from ..core import Row, apply, defop, same_float_dtype
from ..errors import GradError, ShapeError

X = ("f", (3, 4, 2), -2.0, 2.0)

# -- vector p-norms ----------------------------------------------------------------------------


def _pnorm(x, p, axis, keepdims):
    return np.sum(np.abs(x) ** p, axis=axis, keepdims=keepdims) ** (1.0 / p)


def _pnorm_rule(x, p, axis, keepdims):
    return reduced_shape(x.shape, axis, keepdims), same_float_dtype(x)


def _pnorm_vjp(g, ans, x, p, axis, keepdims):
    # d/dx (sum |x|^p)^(1/p) = sign(x) |x|^(p-1) / norm^(p-1); 0 where the norm is 0
    n = kept_dims(ans, x, axis, keepdims)
    return kept_dims(g, x, axis, keepdims) * sign(x) * power(abs(x), p - 1) / power(where(n > 0, n, 1), p - 1)


def _ref_pnorm(x, p, axis, keepdims):
    return np.exp(np.log(np.sum(np.exp(p * np.log(np.abs(x))), axis=axis, keepdims=keepdims)) / p)


_pnorm_op = defop("pnorm", _pnorm, _pnorm_rule, vjp=(_pnorm_vjp,),
                  row=Row((X,), {"p": 3.0, "axis": (1,), "keepdims": False}, ref=_ref_pnorm))


def pnorm(x, p, axes, keepdims):
    return apply("pnorm", x, p=float(p), axis=axes, keepdims=keepdims)

# -- matrix norms by singular values ------------------------------------------------------------


def _svd_norm(x, ord, axis, keepdims):
    return np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)


def _svd_rule(x, ord, axis, keepdims):
    dt = same_float_dtype(x)
    if len(axis) != 2:
        raise ShapeError(f"a matrix norm needs two axes, got {axis}")
    return reduced_shape(x.shape, axis, keepdims), dt


def _svd_grad(x, ord, axis):
    """d norm / dx: U V^T (nuclear) or u1 v1^T (spectral), in x's layout."""
    x = np.asarray(x)
    moved = np.moveaxis(x, axis, (-2, -1))
    u, _, vt = np.linalg.svd(moved, full_matrices=False)
    if ord == "nuc":
        d = u @ vt
    else:
        d = u[..., :, :1] @ vt[..., :1, :]
    return np.moveaxis(d, (-2, -1), axis).astype(x.dtype)


def _no_second_order(gg, ans, x, ord, axis):
    raise GradError(f"the second derivative of the {ord}-norm (through singular vectors) is not "
                    f"supported")


_svd_grad_op = defop("svd_norm_grad", _svd_grad, lambda x, ord, axis: (x.shape, same_float_dtype(x)),
                     vjp=(_no_second_order,),
                     row=Row((("f", (3, 4), -1.0, 1.0),), {"ord": "nuc", "axis": (0, 1)}, grad=False,
                             ref=lambda x, ord, axis: _ref_polar(x)))


def _ref_polar(x):
    # U V^T is the orthogonal factor of the polar decomposition, (x x^T)^(-1/2) x for a
    # wide x of full rank (the row's sample), in float64
    x64 = np.asarray(x, np.float64)
    w, q = np.linalg.eigh(x64 @ x64.T)
    return ((q / np.sqrt(w)) @ q.T @ x64).astype(np.asarray(x).dtype)


def _ref_svd_norm(x, ord, axis, keepdims):
    # through the eigenvalues of x^T x: singular values are their square roots
    moved = np.moveaxis(np.asarray(x, np.float64), axis, (-2, -1))
    s = np.sqrt(np.clip(np.linalg.eigvalsh(np.swapaxes(moved, -1, -2) @ moved), 0, None))
    out = s.sum(-1) if ord == "nuc" else s.max(-1)
    return out.reshape(reduced_shape(x.shape, axis, True)) if keepdims else out


_svd_norm_op = defop("svd_norm", _svd_norm, _svd_rule,
                     vjp=(lambda g, ans, x, ord, axis, keepdims:
                          kept_dims(g, x, axis, keepdims) * apply("svd_norm_grad", x, ord=ord, axis=axis),),
                     row=Row((X,), {"ord": "nuc", "axis": (0, 2), "keepdims": False}, ref=_ref_svd_norm))


def matrix_norm(x, ord, axes, keepdims):
    """numpy.linalg.norm over the axes (rows, columns) for ord "nuc", 2, 1 and inf."""
    if ord in ("nuc", 2):   # both transpose-invariant: the axes in any order
        return apply("svd_norm", x, ord=ord, axis=tuple(sorted(axes)), keepdims=keepdims)
    rows, cols = axes if ord == 1 else axes[::-1]     # 1: the largest column sum; inf: row sum
    col_sums = sum(abs(x), axis=rows, keepdims=True)
    out = max(col_sums, axis=cols, keepdims=True)
    return out if keepdims else reshape(out, reduced_shape(tuple(x.shape), set(axes), False))


from .elementwise import abs, power, sign, where  # noqa: E402
from .reduce import kept_dims, max, reduced_shape, sum  # noqa: E402
from .shape import reshape  # noqa: E402
