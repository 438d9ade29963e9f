"""Random nodes: ev.random.normal, uniform, bernoulli, categorical.

Each random node owns a seed stream: a numpy Generator made from its `seed=` (an int,
a numpy SeedSequence, or None for fresh entropy; a Generator passed in is shared, not
copied). Every run of either machine draws new values from the stream, so a run
sequence is reproducible from the seed: the same graph built again with the same seeds
gives the same values run after run. Nodes with equal int seeds draw equal values; give
each its own seed, or spawn them (`np.random.SeedSequence(0).spawn(n)`).

In: numbers or nodes for the distribution's parameters, a shape, a seed (and, when no
parameter is a node, the graph=). Out: a node of that shape (an array when nothing is
a node and no graph is given: the functions evaluate eagerly, like every op).

normal's value is loc + scale * z and uniform's low + (high - low) * u, for a
standard draw z or u, so gradients flow to loc, scale, low and high (the
reparameterisation). A bernoulli draw is not differentiable.

The primitives take a node only for its shape and dtype (bernoulli: its
probabilities), as dropout_mask does; the LispMachine never replays a graph holding one.
"""
import numpy as np

from ..core import FLOAT_DTYPES, Graph, Node, Row, apply, defop, norm_dtype, same_float_dtype
from ..errors import DTypeError, ExprError, RunError, ShapeError
from .argcheck import arg_errors

__all__ = ["normal", "uniform", "bernoulli", "categorical"]


def _like_rule(x, rng):
    return x.shape, same_float_dtype(x)


def _standard_normal(x, rng):
    x = np.asarray(x)
    return rng.standard_normal(x.shape, dtype=x.dtype)


def _standard_uniform(x, rng):
    x = np.asarray(x)
    return rng.random(x.shape, dtype=x.dtype)


def _bernoulli(p, rng):
    p = np.asarray(p)
    if p.size and not (p.min() >= 0 and p.max() <= 1):   # NOTE: NaN fails both tests too
        raise RunError(f"bernoulli: probabilities must lie in [0, 1], got min {p.min()}, max {p.max()}")
    return (rng.random(p.shape) < p).astype(p.dtype)


# A random row's ref checks the distribution of one sample (values differ every run).
def _check_normal(z, x, rng):
    return z.shape == x.shape and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def _check_uniform(u, x, rng):
    return u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 1 / 12) < 0.01


def _check_bernoulli(b, p, rng):
    return set(np.unique(b)) <= {0, 1} and abs(b.mean() - p.mean()) < 0.03


def _categorical(logits, rng):
    # NOTE: the Gumbel-max trick: argmax(logits + Gumbel noise) is a draw from
    # softmax(logits), with no normalisation and no cumulative sum per row.
    logits = np.asarray(logits)
    u = rng.random(logits.shape)
    with np.errstate(divide="ignore"):
        return np.argmax(logits - np.log(-np.log1p(-u)), axis=-1).astype(np.int64)


def _categorical_rule(logits, rng):
    same_float_dtype(logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ShapeError(f"categorical needs logits with a last axis of at least one class, got {logits.shape}")
    return logits.shape[:-1], np.dtype(np.int64)


def _check_categorical(got, logits, rng):
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    counts = np.eye(logits.shape[-1])[got]
    return got.dtype == np.int64 and np.abs((counts - p).mean(0)).max() < 0.02


BIG = ("f", (100, 100), -1.0, 1.0)
_normal = defop("random_normal", _standard_normal, _like_rule,
                row=Row((BIG,), grad=False, random=True, ref=_check_normal),
                doc="Standard normal draws of x's shape and dtype (x's values are not read).")
_uniform = defop("random_uniform", _standard_uniform, _like_rule,
                 row=Row((BIG,), grad=False, random=True, ref=_check_uniform),
                 doc="Uniform draws in [0, 1) of x's shape and dtype (x's values are not read).")
_bern = defop("random_bernoulli", _bernoulli, _like_rule,
              row=Row((("f", (100, 100), 0.1, 0.9),), grad=False, random=True, ref=_check_bernoulli),
              doc="1 with probability p, else 0, elementwise (p in [0, 1]).")


_categ = defop("random_categorical", _categorical, _categorical_rule,
               row=Row((("f", (4000, 3), -1.5, 1.5),), grad=False, random=True, ref=_check_categorical),
               doc="A class index drawn from softmax(logits) along the last axis (int64).")


def _stream(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    raise ExprError(f"seed must be an int, a numpy SeedSequence or Generator, or None; "
                    f"got {type(seed).__name__}")


def _setup(params, shape, dtype, graph):
    """The graph (None: evaluate eagerly), the dtype and the shape of a draw."""
    nodes = [p for p in params if isinstance(p, Node)]
    if graph is not None and not isinstance(graph, Graph):
        raise ExprError(f"graph= must be an ev.Graph, got {type(graph).__name__}")
    g = nodes[0].graph if nodes else graph
    if nodes and graph is not None and g is not graph:
        raise ExprError("the parameters belong to another graph than graph=")
    if nodes:
        dt = same_float_dtype(*nodes)
        if dtype is not None and norm_dtype(dtype) != dt:
            raise DTypeError(f"dtype={np.dtype(dtype).name} but the parameters are {dt.name}")
    else:
        dt = norm_dtype(np.float64 if dtype is None else dtype)
    if dt not in FLOAT_DTYPES:
        raise DTypeError(f"needs a float dtype, got {dt.name}")
    shapes = [tuple(np.shape(p)) for p in params]
    try:
        full = np.broadcast_shapes(*shapes, *(() if shape is None else [tuple(shape)]))
    except ValueError:
        raise ShapeError(f"parameter shapes {shapes} do not broadcast"
                         + ("" if shape is None else f" to shape {tuple(shape)}")) from None
    if shape is not None and full != tuple(int(s) for s in shape):
        raise ShapeError(f"parameter shapes {shapes} do not fit shape {tuple(shape)}")
    return g, dt, tuple(int(s) for s in full)


def _carrier(g, params, shape, dt):
    """A node of the draw's shape and dtype: a parameter of that shape, or a broadcast zero."""
    for p in params:
        if isinstance(p, Node) and p.shape == shape:
            return p
    return apply("broadcast_to", g.constant(0.0, dtype=dt), shape=shape)


def normal(loc=0.0, scale=1.0, shape=None, *, seed=None, dtype=None, graph=None):
    """Draws from N(loc, scale^2), fresh each run (numpy's normal; shape= is its size=)."""
    with arg_errors("normal", loc, scale):
        g, dt, full = _setup((loc, scale), shape, dtype, graph)
        rng = _stream(seed)
    if g is None:
        return np.asarray(loc + scale * rng.standard_normal(full, dtype=dt), dt)
    z = apply("random_normal", _carrier(g, (loc, scale), full, dt), rng=rng)
    if not (isinstance(scale, (int, float)) and scale == 1):
        z = z * scale
    return z if isinstance(loc, (int, float)) and loc == 0 else z + loc


def uniform(low=0.0, high=1.0, shape=None, *, seed=None, dtype=None, graph=None):
    """Draws from U[low, high), fresh each run (numpy's uniform; shape= is its size=)."""
    with arg_errors("uniform", low, high):
        g, dt, full = _setup((low, high), shape, dtype, graph)
        rng = _stream(seed)
    if g is None:
        return np.asarray(low + (high - low) * rng.random(full, dtype=dt), dt)
    u = apply("random_uniform", _carrier(g, (low, high), full, dt), rng=rng)
    numbers = isinstance(low, (int, float)) and isinstance(high, (int, float))
    if not (numbers and low == 0 and high == 1):
        u = u * (high - low) + low
    return u


def bernoulli(p=0.5, shape=None, *, seed=None, dtype=None, graph=None):
    """1.0 with probability p, else 0.0, fresh each run (torch.bernoulli); p is a number in
    [0, 1] or a node of probabilities (checked when drawn). Not differentiable."""
    with arg_errors("bernoulli", p):
        if isinstance(p, (int, float)) and not 0 <= p <= 1:
            raise ExprError(f"p must lie in [0, 1], got {p}")
        g, dt, full = _setup((p,), shape, dtype, graph)
        rng = _stream(seed)
    if g is None:
        return _bernoulli(np.broadcast_to(np.asarray(p, dt), full), rng)
    if isinstance(p, Node):
        probs = p if p.shape == full else apply("broadcast_to", p, shape=full)
    else:
        probs = apply("broadcast_to", g.constant(float(p), dtype=dt), shape=full)
    return apply("random_bernoulli", probs, rng=rng)


def categorical(logits, *, seed=None, graph=None):
    """Class indices drawn from softmax(logits) along the last axis, fresh each run
    (jax.random.categorical); int64, of logits' shape less its last axis. Not
    differentiable. Given an array and no graph, draws now."""
    with arg_errors("categorical", logits):
        rng = _stream(seed)
        if graph is not None and not isinstance(graph, Graph):
            raise ExprError(f"graph= must be an ev.Graph, got {type(graph).__name__}")
    if isinstance(logits, Node):
        return apply("random_categorical", logits, rng=rng)
    arr = np.asarray(logits)
    if arr.dtype.kind != "f":
        raise DTypeError(f"categorical: logits must be float, got {arr.dtype.name}")
    if graph is None:
        _categorical_rule(arr, rng)
        return _categorical(arr, rng)
    return apply("random_categorical", graph.constant(arr), rng=rng)


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
