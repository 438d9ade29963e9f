"""Lowering rows of matmul and outer (ops/linalg.py).

matmul's C row: float32 matrices, in a 512-bit build, that the thread policy runs on
one thread go to exprvm's own product (csrc/ev_gemm.c, kernels/gemm.py), 1.5-2x the
speed of the OpenBLAS numpy ships on this machine's cores (that one picks its
256-bit kernels there); everything else is numpy's (BLAS, with the policy's
threads).
"""
import numpy as np

from ...kernels import gemm
from .. import threads
from .table import Lowered, lowers

_F32 = np.dtype(np.float32)


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


# NOTE: measured on the 2-core AVX-512 machine (benchmarks/bench_gemm.py): below these
# the BLAS call is as fast or faster.
MIN_ROWS = 8
MIN_WORK = 1 << 17


def _own_product(req):
    """Does this matmul go to the C product: float32 matrices on the host, whole-element
    strides, enough rows and work for the 8 x 48 tiles to pay (a row vector or a tiny
    product is faster through numpy's BLAS, its call overhead lower), and one thread
    by the thread policy?"""
    if req.device != "cpu" or req.dtype != _F32 or any(d != _F32 for d in req.in_dtypes):
        return False
    if len(req.in_shapes) != 2 or any(len(s) != 2 for s in req.in_shapes) or not gemm.preferred():
        return False
    (m, k), (_, n) = req.in_shapes
    if m < MIN_ROWS or m * n * k < MIN_WORK:
        return False
    # NOTE: the C product runs on one thread; a product the thread policy would give
    # several stays with the BLAS (with its threads, applied by threads.apply).
    ctl = threads.blas_control()
    ambient = ctl.get() if ctl is not None else 1
    if min(ambient, threads.current().blas_threads(2 * m * n * k)) > 1:
        return False
    return all(f is not None and all(st >= 0 and st % 4 == 0 for st in f.strides) for f in req.layouts)


@lowers("matmul", "c")
def _matmul_c_row(req):
    if not _own_product(req):
        return None
    return Lowered(lambda ins, out, tmps: gemm.bind(ins[0], ins[1], out, tmps[0], "matmul"),
                   tmps=((gemm.work_shape(), _F32),), kernel="c")


@lowers("outer")
def _outer_row(req):
    return Lowered(_outer)
