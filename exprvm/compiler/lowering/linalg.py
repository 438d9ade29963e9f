"""Lowering rows of matmul and outer (ops/linalg.py)."""
import numpy as np

from .table import Lowered, lowers


def _matmul(ins, out, tmps):
    a, b = ins
    # NOTE: for matrices np.dot is matmul with less dispatch around the BLAS call (~0.4 us
    # a call, a quarter of a batch-1 RNN step's matmul); it needs a C-contiguous out.
    if a.ndim == 2 and b.ndim == 2 and out.flags.c_contiguous and a.dtype == b.dtype == out.dtype:
        return np.dot, (a, b, out)
    return np.matmul, (a, b, out)


def _outer(ins, out, tmps):
    a, b = ins
    return np.multiply, (a.reshape(-1, 1), b.reshape(1, -1), out)


@lowers("matmul")
def _matmul_row(req):
    return Lowered(_matmul)


@lowers("outer")
def _outer_row(req):
    return Lowered(_outer)
