"""CUDA graphs: a run of bound device launches captured once and replayed as one launch.

A compiled program's device instructions are a fixed launch sequence over buffers that
stay put between runs, so they can be recorded once (cudaStreamBeginCapture ...
cudaGraphInstantiate) and replayed each run with a single cudaGraphLaunch, sparing the
host a launch per kernel. What a graph keeps is what each launch was given when it was
captured: pointers and scalars. So the steps captured must launch work on the device
only, over memory that outlives the graph (a synchronous copy or an allocation inside
them fails the capture, which says so), and the caller captures again when it rebinds
them (a TapeMachine does: machines/cuda_graph.py).

    graph = capture(steps)        # a CudaGraph; runs nothing (KernelError: not capturable)
    graph.launch()                # the steps' work, in their order, on the device
    graph.free()
"""
import gc

from exprvm.errors import KernelError
from exprvm.device import cublas, loader


def supported():
    """Can the loaded CUDA library capture graphs? (A library built before it could, or a
    stand-in with the same ABI for the rest, cannot.)"""
    try:
        _, lib = loader.load()
        return all(hasattr(lib, name) for name in ("ev_cuda_capture_begin", "ev_cuda_capture_end",
                                                   "ev_cuda_graph_launch", "ev_cuda_graph_free",
                                                   "ev_cuda_stream"))
    except Exception:       # NOTE: a stand-in raises what it likes for a name it lacks
        return False


class CudaGraph:
    """A captured graph, with the library that captured it (the GPU's, or the host twin's)."""

    def __init__(self, lib, handle):
        self._lib, self._handle = lib, handle

    def launch(self):
        """Run the graph's work (asynchronously, ordered with the default stream)."""
        if self._handle is None:
            raise KernelError("this CUDA graph was freed")
        loader.check(self._lib.ev_cuda_graph_launch(self._handle), "launching a CUDA graph", KernelError)

    def free(self):
        """Release the graph (idempotent)."""
        if self._handle is not None:
            self._lib.ev_cuda_graph_free(self._handle)
            self._handle = None

    def __del__(self):
        # Safety net only (a machine dropped without close()), as DeviceArray's
        try:
            self.free()
        except Exception:  # noqa: BLE001 - nothing can be raised from __del__
            pass


def capture(steps):
    """Record steps (bound (fn, args) pairs of device launches) as a CudaGraph. Nothing
    runs. KernelError when a step cannot be captured (its own error, or the capture's),
    with nothing left half-captured."""
    ffi, lib = loader.load()
    # NOTE: the cyclic collector paused meanwhile: a DeviceArray it finds dead would be
    # freed inside the capture (cudaFree), which fails the capture and leaks the array
    paused = gc.isenabled()
    gc.disable()
    try:
        with cublas.exclusive():
            return _capture(steps, ffi, lib)
    finally:
        if paused:
            gc.enable()


def _capture(steps, ffi, lib):
    loader.check(lib.ev_cuda_capture_begin(), "beginning a CUDA graph capture", KernelError)
    failed = None
    try:
        cublas.follow(int(ffi.cast("uintptr_t", lib.ev_cuda_stream())))
        for fn, args in steps:
            fn(*args)
    except Exception as e:      # NOTE: the capture must end before anything is reported
        failed = e
    finally:
        try:
            cublas.follow(0)
        finally:
            out = ffi.new("void**")
            rc = lib.ev_cuda_capture_end(out)
    if failed is not None:
        if out[0] != ffi.NULL:
            lib.ev_cuda_graph_free(out[0])
        raise KernelError(f"cannot capture these launches as a CUDA graph: {failed}") from failed
    loader.check(rc, "capturing launches as a CUDA graph", KernelError)
    return CudaGraph(lib, out[0])
