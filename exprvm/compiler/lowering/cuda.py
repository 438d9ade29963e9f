"""Lowering rows of the instructions placed on a CUDA device (compiler/placement.py):
exprvm.kernels' checked CUDA kernels over DeviceArrays, and the transfers."""
from ... import kernels
from ...kernels import KERNEL_OPS
from .table import ALL, Lowered, lowers

# exprvm op -> the element-wise binary CUDA kernel (equal shapes only)
BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}


@lowers("to_device", "cuda")
def _to_device(req):
    return Lowered(lambda ins, out, tmps: (out.set, (ins[0],)), kernel="cuda")


@lowers("to_host", "cuda")
def _to_host(req):
    return Lowered(lambda ins, out, tmps: (ins[0].numpy, (out,)), kernel="cuda")


@lowers("unary_grad", "cuda")
def _unary_grad(req):
    op, dt = req.params["op"], req.dtype
    return Lowered(lambda ins, out, tmps: (kernels.unary_grad(op, dt, "cuda"), (*ins, out)),
                   inplace=ALL, kernel="cuda", name=op + "_grad")


def _binary(op):
    def row(req):
        dt = req.dtype
        return Lowered(lambda ins, out, tmps: (kernels.binary(op, dt, "cuda"), (*ins, out)),
                       inplace=ALL, kernel="cuda")
    return row


def _unary(op):
    def row(req):
        dt = req.dtype
        return Lowered(lambda ins, out, tmps: (kernels.unary(op, dt, "cuda"), (*ins, out)),
                       inplace=ALL, kernel="cuda")
    return row


for _op, _kernel in BINARY.items():
    lowers(_op, "cuda")(_binary(_kernel))
for _op in KERNEL_OPS:
    lowers(_op, "cuda")(_unary(_op))
