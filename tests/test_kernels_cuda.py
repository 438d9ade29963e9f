"""CUDA backend: kernels on a device against the numpy reference, DeviceArray,
tidy(), and what happens without a GPU.

Three groups:
  * @pytest.mark.cuda: need a real device; skipped cleanly without one;
  * build and no-driver checks: run on any machine (nvcc needed for the build);
  * a fake device (host memory behind the same ABI) that exercises
    DeviceArray, tidy() and the wrappers' argument checks everywhere.
"""
import re

import numpy as np
import pytest
from cffi import FFI

import exprvm.cuda as cuda
from exprvm import kernels
from exprvm.errors import BackendError, DTypeError, ExprError, KernelError, ShapeError
from exprvm.kernels import build_cuda, cuda_driver, cuda_loader, dispatch, reference

GPU_OK = cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU_OK, reason=f"no CUDA device: {cuda.unavailable_reason()}")
RTOL = {np.float32: 1e-6, np.float64: 2e-15}


def close(got, want, dtype, extra_atol=0.0):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf])
    fin = np.isfinite(want)
    atol = 2 * np.finfo(dtype).smallest_subnormal + (extra_atol[fin] if np.ndim(extra_atol) else 0.0)
    err = np.abs(got[fin].astype(np.float64) - want[fin])
    assert np.all(err <= RTOL[dtype] * np.abs(want[fin].astype(np.float64)) + atol)


def sample(dtype, n=5000):
    rng = np.random.default_rng(3)
    special = [0.0, -0.0, 1e-30, 100.0, -100.0, 1000.0, -1000.0, 1e30, -1e30, np.inf, -np.inf, np.nan, -1.0]
    with np.errstate(over="ignore"):
        return np.concatenate([rng.standard_normal(n) * 4, rng.uniform(-120, 120, n), special]).astype(dtype)


# ---- real device ---------------------------------------------------------

@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
def test_device_matches_reference(op, dtype):
    x = sample(dtype)
    with np.errstate(all="ignore"):
        ans = reference.FORWARD[op](x, None)
        g = np.random.default_rng(4).standard_normal(x.shape).astype(dtype)
        want_grad = reference.GRAD[op](x, ans, g, None)
    with cuda.tidy():
        dx, dans, dg = cuda.to_device(x), cuda.to_device(ans), cuda.to_device(g)
        close(kernels.unary(op, dtype, "cuda")(dx).numpy(), ans, dtype)
        slack = np.finfo(dtype).eps * np.abs(g.astype(np.float64)) if op == "tanh" else 0.0
        close(kernels.unary_grad(op, dtype, "cuda")(dx, dans, dg).numpy(), want_grad, dtype, slack)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("op", kernels.BINARY_OPS)
def test_device_binary(op):
    a, b = np.linspace(1, 2, 1001), np.linspace(-3, 3, 1000).tolist() + [0.5]
    b = np.asarray(b)
    with cuda.tidy():
        got = kernels.binary(op, np.float64, "cuda")(cuda.to_device(a), cuda.to_device(b)).numpy()
    np.testing.assert_array_equal(got, reference.BINARY[op](a, b))


@pytest.mark.cuda
@needs_gpu
def test_round_trip_interface_and_info():
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    with cuda.to_device(host) as d:
        np.testing.assert_array_equal(d.numpy(), host)
        cai = d.__cuda_array_interface__
        assert cai["version"] == 3 and cai["shape"] == (3, 4) and cai["typestr"] == "<f4"
        assert cai["data"] == (d.ptr, False) and cai["strides"] is None
        np.testing.assert_array_equal(d.copy().numpy(), host)
    assert d.freed
    assert cuda.device_count() >= 1
    info = cuda.device_info(0)
    assert info["name"] and info["total_bytes"] > 0


@pytest.mark.cuda
@needs_gpu
def test_tidy_and_alloc_loop_keep_memory_flat():
    cuda.synchronize()
    before = cuda.mem_info()[0]
    with cuda.tidy() as scope:
        tmp = cuda.empty(1 << 20, np.float32)
        kept = scope.keep(cuda.empty(16, np.float32))
    assert tmp.freed and not kept.freed
    kept.free()
    for _ in range(10_000):
        cuda.empty(256, np.float32).free()
    cuda.synchronize()
    # the allocator may keep a small pool; a leak would be 10,000 x 1 KiB
    assert abs(cuda.mem_info()[0] - before) < (4 << 20)


# ---- any machine ---------------------------------------------------------

def test_cuda_source_compiles():
    """nvcc builds csrc/ev_cuda.cu into a library that loads and answers."""
    if build_cuda.find_nvcc() is None:
        pytest.skip("nvcc not found")
    path = build_cuda.build()
    assert path.is_file() and re.match(r"libev_cuda-sm_\d+-[0-9a-f]{16}\.so$", path.name)
    ffi, lib = cuda_loader.open_library(path)
    count = ffi.new("int*")
    rc = lib.ev_cuda_device_count(count)
    if not GPU_OK:  # no driver here: an error code, not a crash
        assert rc != 0 and count[0] == 0
        assert ffi.string(lib.ev_cuda_error_string(rc))
    for op in kernels.KERNEL_OPS:
        for sfx in ("f32", "f64"):
            assert getattr(lib, f"ev_cuda_{op}_{sfx}") and getattr(lib, f"ev_cuda_{op}_grad_{sfx}")


@pytest.fixture
def cuda_state():
    """Restore the loader's cached outcome and drop cached CUDA kernels."""
    saved = dict(cuda_loader._state)
    yield cuda_loader._state
    cuda_loader.reset()
    cuda_loader._state.update(saved)
    for key in [k for k in dispatch._cache if k[3] == "cuda"]:
        del dispatch._cache[key]


def test_no_driver_is_reported_not_crashed(cuda_state, monkeypatch):
    monkeypatch.setattr(cuda_driver, "_DRIVER_NAMES", ("libcuda-that-does-not-exist.so.1",))
    cuda_loader.reset()
    assert cuda.is_available() is False
    assert "driver" in cuda.unavailable_reason()
    assert cuda.device_count() == 0
    assert kernels.backends()["cuda"][0] is False
    with pytest.raises(BackendError):
        kernels.set_backend("cuda")
    with pytest.raises(BackendError):
        cuda.to_device(np.ones(3))
    with pytest.raises(BackendError):
        kernels.unary("tanh", np.float32, "cuda")


# ---- fake device ---------------------------------------------------------

class FakeDevice:
    """exprvm's CUDA ABI over host memory, kernels from the numpy reference."""

    def __init__(self, ffi):
        self.ffi, self.blocks, self.total, self._names = ffi, {}, 1 << 30, {}

    def _addr(self, p):
        return int(self.ffi.cast("uintptr_t", p))

    def ev_cuda_malloc(self, out, nbytes):
        buf = self.ffi.new("char[]", nbytes)
        self.blocks[self._addr(buf)] = buf
        out[0] = self.ffi.cast("void*", buf)
        return 0

    def ev_cuda_free(self, p):
        addr = self._addr(p)
        if addr and self.blocks.pop(addr, None) is None:
            return 1  # cudaErrorInvalidValue: a double free would be a bug
        return 0

    def ev_cuda_memcpy_htod(self, dst, src, n):
        self.ffi.memmove(dst, src, n)
        return 0

    ev_cuda_memcpy_dtoh = ev_cuda_memcpy_dtod = ev_cuda_memcpy_htod

    def ev_cuda_mem_info(self, free, total):
        total[0] = self.total
        free[0] = self.total - sum(len(b) for b in self.blocks.values())
        return 0

    def ev_cuda_error_string(self, rc):
        return self._names.setdefault(rc, self.ffi.new("char[]", b"fake error %d" % rc))

    def ev_cuda_synchronize(self):
        return 0

    def _view(self, p, n, dt):
        return np.frombuffer(self.ffi.buffer(self.ffi.cast("char*", p), n * dt.itemsize), dt)

    def __getattr__(self, name):
        m = re.fullmatch(r"ev_cuda_(\w+?)(_grad)?_(f32|f64)", name)
        if not m:
            raise AttributeError(name)
        op, grad, dt = m.group(1), m.group(2), np.dtype(np.float32 if m.group(3) == "f32" else np.float64)

        def kernel(*args):
            *ptrs, n = args
            arrays = [self._view(p, n, dt) for p in ptrs]
            with np.errstate(all="ignore"):
                if op in reference.BINARY:
                    reference.BINARY[op](*arrays[:2], out=arrays[2])
                elif grad:
                    reference.GRAD[op](*arrays)
                else:
                    reference.FORWARD[op](*arrays)
            return 0
        return kernel


@pytest.fixture
def fake(cuda_state):
    ffi = FFI()
    dev = FakeDevice(ffi)
    cuda_loader.reset()
    cuda_state.update(ffi=ffi, lib=dev, reason="fake device")
    return dev


def test_fake_device_kernels_and_checks(fake):
    x = np.linspace(-3, 3, 50, dtype=np.float32)
    with cuda.tidy():
        dx = cuda.to_device(x)
        y = kernels.unary("tanh", np.float32, "cuda")(dx)
        np.testing.assert_array_equal(y.numpy(), np.tanh(x))
        g = kernels.unary_grad("tanh", np.float32, "cuda")(dx, y, cuda.to_device(np.ones_like(x)))
        np.testing.assert_allclose(g.numpy(), 1 - np.tanh(x) ** 2, rtol=1e-6)
        s = kernels.binary("add", np.float32, "cuda")(dx, dx)
        np.testing.assert_array_equal(s.numpy(), x + x)
        with pytest.raises(KernelError):
            kernels.unary("tanh", np.float32, "cuda")(x)  # host array
        with pytest.raises(DTypeError):
            kernels.unary("tanh", np.float64, "cuda")(dx)
        with pytest.raises(ShapeError):
            kernels.unary("tanh", np.float32, "cuda")(dx, cuda.empty(49, np.float32))
        with pytest.raises(ShapeError):
            kernels.binary("mul", np.float32, "cuda")(dx, cuda.empty(3, np.float32))
        dead = cuda.to_device(x)
        dead.free()
        dead.free()  # idempotent
        with pytest.raises(KernelError):
            kernels.unary("exp", np.float32, "cuda")(dead)
        with pytest.raises(KernelError):
            dead.numpy()
    assert not fake.blocks


def test_fake_device_array_basics(fake):
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    d = cuda.to_device(host)
    assert (d.shape, d.dtype, d.size, d.nbytes, len(d)) == ((2, 3), np.float64, 6, 48, 2)
    cai = d.__cuda_array_interface__
    assert cai["version"] == 3 and cai["typestr"] == "<f8" and cai["data"] == (d.ptr, False)
    d.set(host * 2)
    np.testing.assert_array_equal(d.numpy(), host * 2)
    with pytest.raises(ShapeError):
        d.set(np.ones(5))
    with pytest.raises(DTypeError):
        cuda.to_device(np.array(["a"]))
    with pytest.raises(ShapeError):
        cuda.empty((-1, 2), np.float32)
    empty = cuda.empty(0, np.float32)
    assert empty.numpy().shape == (0,) and empty.__cuda_array_interface__["data"] == (0, False)
    d.free()
    with pytest.raises(KernelError):
        d.__cuda_array_interface__
    assert "freed" in repr(d) and not fake.blocks
    assert issubclass(BackendError, ExprError)


def test_fake_tidy_semantics(fake):
    outside = cuda.empty(4, np.float32)
    with cuda.tidy():
        with cuda.tidy() as inner:
            a = cuda.empty(4, np.float32)
            b = inner.keep(cuda.empty(4, np.float32))
            c = cuda.tidy.keep(cuda.empty(4, np.float32))
        assert a.freed and not b.freed and not c.freed
    assert b.freed and c.freed, "kept arrays pass to the enclosing scope"
    assert not outside.freed

    def step(x):
        tmp = cuda.empty(8, np.float32)
        return {"y": x.copy(), "pair": (tmp, 3)}
    res = cuda.tidy(step, outside)
    assert not res["y"].freed and not res["pair"][0].freed
    with pytest.raises(RuntimeError):
        with cuda.tidy():
            leaked = cuda.empty(4, np.float32)
            raise RuntimeError("boom")
    assert leaked.freed
    for a in (outside, res["y"], res["pair"][0]):
        a.free()
    assert not fake.blocks


def test_fake_alloc_loop_is_flat(fake):
    free0 = cuda.mem_info()[0]
    for _ in range(10_000):
        with cuda.empty(64, np.float32):
            pass
    assert cuda.mem_info()[0] == free0 and not fake.blocks
    d = cuda.empty(64, np.float32)
    del d  # the safety net frees what was forgotten
    assert not fake.blocks
