"""ev.cuda.DeviceArray speaks DLPack both ways: __dlpack__ / __dlpack_device__ hand its
device memory out without a copy, ev.from_dlpack wraps a CUDA producer's memory as a
DeviceArray, and each side keeps the other's memory alive exactly as long as it is
used. On the host twin (device memory is host memory there) and on a GPU where one is."""
import gc
import weakref

import numpy as np
import pytest

import exprvm as ev
from cuda_twin import GPU_OK, on_twin
from exprvm.device import dlpack

F32 = np.float32


def test_device_arrays_round_trip_through_dlpack_on_the_twin():
    with on_twin():
        host = np.arange(12, dtype=F32).reshape(3, 4)
        a = ev.cuda.to_device(host)
        assert a.__dlpack_device__() == (2, 0)
        v = ev.from_dlpack(a)
        assert isinstance(v, ev.cuda.DeviceArray)
        assert (v.ptr, v.shape, v.strides, v.dtype) == (a.ptr, a.shape, a.strides, a.dtype)
        t = a.T                                   # a strided view keeps its strides
        vt = ev.from_dlpack(t)
        assert (vt.ptr, vt.strides) == (t.ptr, t.strides)
        np.testing.assert_array_equal(vt.numpy(), host.T)
        v.set(host * 2)                           # one memory: a write through v shows in a
        np.testing.assert_array_equal(a.numpy(), host * 2)
        with pytest.raises((BufferError, RuntimeError), match="device|Device"):
            np.from_dlpack(a)       # numpy refuses device memory (its error intact, the capsule freed)
        alive = weakref.ref(a)
        del a, t
        gc.collect()
        assert alive() is not None                # the consumers keep the producer alive
        np.testing.assert_array_equal(v.numpy(), host * 2)
        v.free()
        vt.free()
        gc.collect()
        assert alive() is None and not dlpack.LIVE


def test_unconsumed_capsules_and_copies_let_go_on_the_twin():
    if dlpack._capsule_destructor() is None:
        pytest.skip("no C extension: an unconsumed capsule keeps its array (documented)")
    with on_twin():
        b = ev.cuda.to_device(np.ones(5, F32))
        alive = weakref.ref(b)
        capsule = b.__dlpack__()
        del b
        gc.collect()
        assert alive() is not None
        del capsule                               # never consumed: released when it dies
        gc.collect()
        assert alive() is None and not dlpack.LIVE
        c = ev.cuda.to_device(np.arange(4, dtype=F32))
        copied = ev.cuda.DeviceArray.from_dlpack(_Exporter(c, copy=True))
        assert copied.ptr != c.ptr
        np.testing.assert_array_equal(copied.numpy(), np.arange(4, dtype=F32))
        copied.free()
        c.free()
        with pytest.raises(ev.KernelError):
            c.__dlpack__()                        # a freed array exports nothing


def test_a_producer_without_strides_is_read_as_c_contiguous_on_the_twin():
    # DLPack's NULL strides mean C-contiguous (CuPy and older PyTorch give them so)
    with on_twin():
        host = np.arange(24, dtype=F32).reshape(2, 3, 4)
        a = ev.cuda.to_device(host)
        v = ev.from_dlpack(_NullStrides(a))
        assert (v.ptr, v.shape, v.strides) == (a.ptr, (2, 3, 4), (48, 16, 4))
        np.testing.assert_array_equal(v.numpy(), host)
        v.free()
        a.free()
        gc.collect()
        assert not dlpack.LIVE


class _NullStrides:
    """A producer whose DLTensor has NULL strides."""

    def __init__(self, a):
        self.a = a

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()

    def __dlpack__(self, stream=None):
        capsule = self.a.__dlpack__(stream=stream)
        address = dlpack._pointer(capsule, b"dltensor")
        dlpack.DLManagedTensor.from_address(address).dl_tensor.strides = None
        return capsule


class _Exporter:
    """A producer passing copy= through, as a consumer asking for a copy would."""

    def __init__(self, a, copy):
        self.a, self.copy = a, copy

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__(stream=stream, copy=self.copy)


@pytest.mark.cuda
@pytest.mark.skipif(not GPU_OK, reason="no CUDA device")
def test_torch_cuda_tensors_and_device_arrays_share_memory():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    t = torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3)
    a = ev.from_dlpack(t)
    assert isinstance(a, ev.cuda.DeviceArray) and a.ptr == t.data_ptr()
    np.testing.assert_array_equal(a.numpy(), t.cpu().numpy())
    back = torch.from_dlpack(ev.cuda.to_device(np.ones((2, 2), F32)))
    assert back.device.type == "cuda" and float(back.sum()) == 4.0
    a.free()
