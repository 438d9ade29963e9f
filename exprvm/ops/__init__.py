"""The op library. Every function builds a node when given nodes and evaluates
eagerly (numpy) when given arrays; see core.op.apply. This package holds op
definitions only: each op's numpy impl, shape rule, VJP and test row side by side."""
import types as _types

from ..core import OPS, Op, Row, apply, defop, unbroadcast  # noqa: F401
from .elementwise import (  # noqa: F401
    abs, add, astype, cos, cube, divide, equal, exp, expm1, greater, greater_equal, leaky_relu,
    less, less_equal, log, log1p, maximum, minimum, multiply, negative, not_equal, power, relu,
    sigmoid, sign, sin, softplus, sqrt, square, subtract, tanh, where)
from .reduce import logsumexp, max, mean, min, sum  # noqa: F401
from .shape import (  # noqa: F401
    broadcast_to, concat, concatenate, embedding, getitem, reshape, stack, take, transpose)
from .linalg import dot, matmul, outer  # noqa: F401
from .neural import cross_entropy, dropout, log_softmax, one_hot, softmax  # noqa: F401
from .activations import elu, erf, gelu, log2  # noqa: F401
from .rounding import ceil, floor, round  # noqa: F401
from .arrays import clip, pad, split, stop_gradient  # noqa: F401
from .contraction import einsum, tensordot  # noqa: F401
from . import random  # noqa: F401  (ev.random.normal / uniform / bernoulli)
from . import internal as _internal  # noqa: F401  (registers the fused ops VJPs build; not public)
from .conv import conv1d, conv2d  # noqa: F401
from .pool import avg_pool2d, global_avg_pool2d, max_pool2d  # noqa: F401
from .normalization import batch_norm, batch_norm_update, layer_norm  # noqa: F401
from .statistics import argmax, argmin, norm, std, var  # noqa: F401
from .control import cond, fori_loop, scan, while_loop  # noqa: F401
from .trig import (  # noqa: F401
    arccos, arccosh, arcsin, arcsinh, arctan, arctan2, arctanh, cosh, deg2rad, degrees, exp2, fabs,
    hypot, log10, logaddexp, logaddexp2, rad2deg, radians, reciprocal, sinc, sinh, tan)
from .numpy_elementwise import (  # noqa: F401
    fix, fmax, fmin, fmod, isfinite, isinf, isnan, logical_and, logical_not, logical_or, logical_xor,
    mod, nan_to_num, remainder, trunc)
from .numpy_shape import (  # noqa: F401
    atleast_1d, atleast_2d, atleast_3d, broadcast_arrays, expand_dims, flatten, flip, fliplr, flipud,
    moveaxis, ravel, roll, rollaxis, rot90, squeeze, swapaxes)
from .numpy_join import (  # noqa: F401
    append, array_split, column_stack, dsplit, dstack, hsplit, hstack, repeat, row_stack, tile, vsplit,
    vstack)
from .cumulative import cumprod, cumsum, diff, prod  # noqa: F401
from .sorting import argpartition, argsort, partition, select, sort, take_along_axis  # noqa: F401
from .numpy_linalg import cross, diag, diagonal, inner, kron, linspace, trace, tril, triu, vdot  # noqa: F401
from .functions import FUNCTIONS  # noqa: F401
from . import numpy_api as _numpy_api
from .numpy_api import numpy_functions  # noqa: F401
from . import operators as _operators

_operators.install()
_numpy_api.install()

# Short aliases, as the op table names them.
sub, mul, div, neg = subtract, multiply, divide, negative
pow = power
lt, le, gt, ge, eq, ne = less, less_equal, greater, greater_equal, equal, not_equal

# `from exprvm.ops import *` exports the op functions, never this package's submodules
__all__ = sorted(name for name, value in globals().items()
                 if not name.startswith("_") and not isinstance(value, _types.ModuleType))
