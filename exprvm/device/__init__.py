"""The GPU side of exprvm: device memory and what runs on it, over the CUDA library that
exprvm.kernels builds (csrc/ev_cuda*.cu, nvcc).

In:  host arrays and the compiled program's device instructions.
Out: DeviceArrays and the results of kernels and cuBLAS products on them.

    loader.py   finds, builds (lazily) and loads the CUDA library; maps its errors
    arrays.py   DeviceArray (ev.cuda.DeviceArray): device memory, copies, views
    scopes.py   tidy() / keep(): memory scopes that free what a block creates
    launch.py   checked kernel wrappers over DeviceArrays (unary, binary, broadcast,
                strided copies, the status word)
    nn.py       a training step's kernels (reductions, softmax, cross-entropy, take, ...)
    cublas.py   matrix products on cuBLAS, row-major without copies
    graphs.py   a run of bound launches captured once as a CUDA graph and replayed
    params.py   DeviceParams: parameters resident on the device between runs
    twin.py     the host twin: the same CUDA sources built as C++ and run on the CPU

This package imports exprvm.kernels (its builds, argument checks and dispatch), never the
reverse: on import it hands kernels.dispatch its CUDA kernels (dispatch.provide_cuda).
Importing it touches no GPU; the library is loaded at the first use.
"""
from exprvm.device import launch, loader
from exprvm.kernels import dispatch

dispatch.provide_cuda(loader.status, launch.unary, launch.unary_grad, launch.binary)
