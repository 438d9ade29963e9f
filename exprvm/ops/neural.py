"""Neural-network ops: softmax family, cross-entropy with integer targets, one_hot, dropout."""
import numpy as np

from ..errors import DTypeError, ExprError, ShapeError
from ..core.rules import batch_rows
from ..core import ndim_of, Row, apply, defop, norm_axis, same_float_dtype
from .shape import check_range



def _axis_rule(x, axis):
    return x.shape, same_float_dtype(x)


# NOTE: array methods, not np.max/np.sum: those are Python wrappers that cost more than
# the reduction itself on the small arrays a LispMachine step passes.
def _softmax(x, axis):
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis):
    x = np.asarray(x)
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def _last_axis_rows(in_shapes, shape, params):
    return ("b",) if len(shape) >= 2 and params["axis"] == len(shape) - 1 else None


def logit_rows(in_shapes, shape, params):
    """Op.batch of an op over (rows, classes) logits and per-row targets."""
    return ("b", "b") if len(in_shapes[0]) == 2 else None


X = ("f", (3, 5), -3.0, 3.0)
_sm = defop("softmax", _softmax, _axis_rule,
            vjp=(lambda g, ans, x, axis: ans * (g - sum(g * ans, axis=axis, keepdims=True)),),
            row=Row((X,), {"axis": 1}, ref=lambda x, axis: np.exp(x) / np.exp(x).sum(axis, keepdims=True)),
            batch=_last_axis_rows)
_lsm = defop("log_softmax", _log_softmax, _axis_rule,
             vjp=(lambda g, ans, x, axis: g - exp(ans) * sum(g, axis=axis, keepdims=True),),
             row=Row((X,), {"axis": 0},
                     ref=lambda x, axis: np.log(np.exp(x) / np.exp(x).sum(axis, keepdims=True))),
             batch=_last_axis_rows)


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably (the maximum subtracted first).

    Parameters
    ----------
    x : Node or array
        float32 or float64.
    axis : int, default -1

    Returns
    -------
    Node or numpy.ndarray
        Non-negative, summing to 1 along ``axis``. ``log(softmax(x))`` is rewritten to
        ``log_softmax(x)`` as it is built.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ev.softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    """
    return apply("softmax", x, axis=norm_axis(axis, ndim_of(x), "softmax")[0])


def log_softmax(x, axis=-1):
    """``x - log(sum(exp(x)))`` along ``axis``: the log of ``softmax``, without its overflow
    or its log of zero.

    Parameters
    ----------
    x : Node or array
        float32 or float64.
    axis : int, default -1

    Returns
    -------
    Node or numpy.ndarray

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> np.round(ev.log_softmax(np.array([0.0, 0.0])), 4)
    array([-0.6931, -0.6931])
    """
    return apply("log_softmax", x, axis=norm_axis(axis, ndim_of(x), "log_softmax")[0])


# -- one_hot / cross_entropy ---------------------------------------------------------

def _one_hot_rule(t, depth, dtype):
    if t.dtype.kind not in "iu":
        raise DTypeError(f"one_hot needs integer indices, got {t.dtype.name}")
    return t.shape + (depth,), np.dtype(dtype)


def _one_hot(t, depth, dtype):
    check_range(t, depth, "one_hot")
    return np.equal(np.asarray(t)[..., None], np.arange(depth)).astype(dtype)


_oh = defop("one_hot", _one_hot, _one_hot_rule, int_args=(0,), batch=batch_rows("b"),
            row=Row((("i", (5,), 4),), {"depth": 4, "dtype": "float64"}, grad=False,
                    ref=lambda t, depth, dtype: np.eye(depth, dtype=dtype)[t]))


def one_hot(indices, depth, dtype=np.float64):
    """Rows of the identity matrix picked by integer ``indices``: ``out[..., k] = (indices == k)``.

    Parameters
    ----------
    indices : Node or array of int
        Values in ``[0, depth)``.
    depth : int
        The number of classes (the new last axis).
    dtype : numpy dtype, default float64

    Returns
    -------
    Node or numpy.ndarray
        ``indices.shape + (depth,)``; no gradient flows through it.

    Raises
    ------
    DTypeError
        For non-integer indices.
    IndexRangeError
        For an index outside ``[0, depth)``.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ev.one_hot(np.array([2, 0]), 3)
    array([[0., 0., 1.],
           [1., 0., 0.]])
    """
    return apply("one_hot", indices, depth=int(depth), dtype=np.dtype(dtype).name)


def _xent_rule(logits, t):
    same_float_dtype(logits)
    if t.dtype.kind not in "iu":
        raise DTypeError(f"targets must be integer class ids, got {t.dtype.name}")
    if logits.ndim < 1 or t.shape != logits.shape[:-1]:
        raise ShapeError(f"targets {t.shape} must match the logits' leading shape {logits.shape[:-1]}")
    return t.shape, logits.dtype


def _xent(logits, t):
    lsm = _log_softmax(logits, -1)
    t = np.asarray(t)
    check_range(t, lsm.shape[-1], "cross_entropy")
    if t.ndim == 1:     # the common (batch, classes) case: plain fancy indexing is faster
        return -lsm[np.arange(len(t)), t]
    return -np.take_along_axis(lsm, t[..., None], axis=-1)[..., 0]


def _xent_vjp(g, ans, logits, t):
    # NOTE: the fused op itself (ops/internal.py), so the compiler runs one kernel for it
    return g.reshape(tuple(g.shape) + (1,)) * apply("xent_grad", logits, t)


cross_entropy = defop(
    "cross_entropy", _xent, _xent_rule, vjp=(_xent_vjp, None), int_args=(1,), batch=logit_rows,
    row=Row((("f", (5, 4), -2.0, 2.0), ("i", (5,), 4)),
            ref=lambda z, t: np.log(np.exp(z).sum(-1)) - z[np.arange(len(t)), t]),
    doc="Per-example softmax cross-entropy of logits (..., C) against integer targets (...).")


# -- dropout ----------------------------------------------------------------------------

def _mask(x, rate, rng):
    keep = rng.random(np.shape(x)) >= rate
    return (keep / (1.0 - rate)).astype(np.asarray(x).dtype)


_dm = defop("dropout_mask", _mask, lambda x, rate, rng: (x.shape, same_float_dtype(x)),
            row=Row((("f", (20, 30), -1.0, 1.0),), {"rate": 0.5}, grad=False, random=True,
                    ref=lambda m, x, rate, rng: set(np.unique(m)) <= {0.0, m.dtype.type(1 / (1 - rate))}
                    and abs((m == 0).mean() - rate) < 0.1))


def dropout(x, rate=0.5, seed=None, train=True):
    """Inverted dropout: x * mask / (1 - rate) in training, x itself in evaluation.

    The mask is drawn afresh on every run from a generator seeded by `seed`, so a
    run sequence is reproducible; the gradient reuses the run's mask.
    """
    if not 0.0 <= rate < 1.0:
        raise ExprError(f"dropout rate must be in [0, 1), got {rate}")
    if not train or rate == 0.0:
        return x
    return x * apply("dropout_mask", x, rate=float(rate), rng=np.random.default_rng(seed))


from .elementwise import exp  # noqa: E402
from .reduce import sum  # noqa: E402
