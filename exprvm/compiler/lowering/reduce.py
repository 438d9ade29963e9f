"""Lowering rows of the reductions (ops/reduce.py); logsumexp runs its impl."""
import math

import numpy as np

from .table import Lowered, lowers, seq


def _reduce(uf):
    def row(req):
        axis, keepdims = req.params["axis"], req.params["keepdims"]
        return Lowered(lambda ins, out, tmps: (uf.reduce, (ins[0], axis, None, out, keepdims)))
    return row


lowers("sum")(_reduce(np.add))
lowers("max")(_reduce(np.maximum))
lowers("min")(_reduce(np.minimum))


@lowers("mean")
def _mean_row(req):
    axis, keepdims = req.params["axis"], req.params["keepdims"]
    count = math.prod([req.in_shapes[0][a] for a in axis])

    def run(x, out):
        np.add.reduce(x, axis, None, out, keepdims)
        np.divide(out, count, out)
    return Lowered(seq(run))
