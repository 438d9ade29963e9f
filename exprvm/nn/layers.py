"""Feed-forward blocks (Linear, Embedding) and losses.

Layout: activations are batch-major, (..., features), and weights are stored
(in_features, out_features) so a layer is ``x @ W + b`` with no transpose on
either the forward or the backward pass.
"""
import numpy as np

from ..train import init as _init
from ..errors import DTypeError, ShapeError
from ..ops import cross_entropy, mean, one_hot, reshape, square, take
from .module import Module, draw, draw_weight, graph_of, sub_seed


# Up to this many classes, ids go through a one-hot matmul rather than a row gather.
# NOTE: take's gradient scatters with np.add.at, ~6x slower than the one-hot matmul's
# GEMM at char-RNN sizes (65 x 512 table, 32 ids); a gather wins for large vocabularies.
ONE_HOT_MAX_CLASSES = 1024


def is_ids(x):
    return x.dtype.kind in "iu"


def apply_matrix(x, W, who):
    """x @ W for x of shape (..., in); integer x is taken as one-hot ids and gathers rows."""
    n_in = W.shape[0]
    if is_ids(x):
        if n_in <= ONE_HOT_MAX_CLASSES:
            x = one_hot(x, n_in, W.dtype)
        else:
            return take(W, x, axis=0)
    if x.ndim == 0 or x.shape[-1] != n_in:
        raise ShapeError(f"{who}: input {x.describe()} must end in {n_in} features")
    if x.dtype != W.dtype:
        raise DTypeError(f"{who}: input {x.describe()} is {x.dtype.name}, the weights are "
                         f"{W.dtype.name}; cast one with ev.astype")
    if x.ndim <= 2:
        return x @ W
    # NOTE: a batched (T, B, in) @ (in, out) would take matmul's general VJP, which
    # sums a (T, in, out) product; one 2-d matmul on (T*B, in) is a plain GEMM.
    lead = x.shape[:-1]
    return reshape(reshape(x, (-1, n_in)) @ W, lead + (W.shape[1],))


class Linear(Module):
    """y = x @ W + b, W of shape (in_features, out_features).

    Integer input is read as one-hot class ids of size in_features (a row gather).
    """

    def __init__(self, in_features, out_features, bias=True, name=None, dtype=np.float32,
                 seed=None, init=None, bias_init=None):
        super().__init__(name, "linear")
        self.in_features, self.out_features = int(in_features), int(out_features)
        init = init or _init.glorot_uniform()
        self.W = self.add_param("W", draw_weight(init, self.in_features, self.out_features,
                                                 dtype, sub_seed(seed, 0)))
        self.b = None
        if bias:
            b0 = draw(bias_init or _init.zeros(), (self.out_features,), dtype, sub_seed(seed, 1))
            self.b = self.add_param("b", b0)

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}" + ("" if self.b is not None else ", no bias")

    def __call__(self, x):
        g = graph_of(x, self.name)
        W = self.W.node(g)
        if self.b is None:
            return apply_matrix(x, W, self.name)
        if is_ids(x):
            return apply_matrix(x, W + self.b.node(g), self.name)   # one-hot rows sum to 1
        return apply_matrix(x, W, self.name) + self.b.node(g)


class Embedding(Module):
    """Rows of a (num, dim) table picked by integer ids: (...,) ids -> (..., dim)."""

    def __init__(self, num, dim, name=None, dtype=np.float32, seed=None, init=None):
        super().__init__(name, "embedding")
        self.num, self.dim = int(num), int(dim)
        table = draw(init or _init.normal(std=1.0), (self.num, self.dim), dtype, sub_seed(seed, 0))
        self.table = self.add_param("table", table)

    def extra_repr(self):
        return f"{self.num} x {self.dim}"

    def __call__(self, ids):
        g = graph_of(ids, self.name)
        if not is_ids(ids):
            raise DTypeError(f"{self.name}: ids must be integers, got {ids.describe()}")
        return take(self.table.node(g), ids, axis=0)


def mse(pred, target):
    """Mean squared error over all elements."""
    return mean(square(pred - target))


def mean_cross_entropy(logits, targets):
    """Softmax cross-entropy in nats, averaged over all positions: logits (..., C), targets (...)."""
    return mean(cross_entropy(logits, targets))
