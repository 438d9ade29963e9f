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

import exprvm as ev
import exprvm.cuda as cuda
from exprvm import kernels
from exprvm.errors import BackendError, DTypeError, ExprError, KernelError, ShapeError, UsageError
from exprvm.device import loader
from exprvm.kernels import build_cuda, cuda_driver, dispatch, reference

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
    ffi, lib = loader.open_library(path)
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
    saved = dict(loader._state)
    yield loader._state
    loader.reset()
    loader._state.update(saved)
    for key in [k for k in dispatch._cache if k[3] == "cuda"]:
        del dispatch._cache[key]


def test_no_driver_is_reported_not_crashed(cuda_state, monkeypatch):
    monkeypatch.setattr(cuda_driver, "_DRIVER_NAMES", ("libcuda-that-does-not-exist.so.1",))
    loader.reset()
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


def test_a_host_compile_asks_nothing_of_cuda(cuda_state):
    """Compiling and running a program for the host neither loads the CUDA driver nor
    builds the CUDA library: the compile asks about its own backend only."""
    loader.reset()
    g = ev.Graph("host")
    x = g.vector("x", 3)
    tm = ev.TapeMachine(g, outputs=[ev.tanh(x) * 2], backend="c" if kernels.backend_status("c")[0] else "numpy")
    tm.run({x: np.ones(3)})
    ev.TapeMachine(g, outputs=[ev.exp(x)]).run({x: np.ones(3)})
    assert dict(cuda_state) == {}


def test_probing_for_a_missing_driver_starts_no_program(cuda_state, monkeypatch):
    """A missing libcuda is found missing by the system loader alone: no ldconfig, gcc or
    ld run to look for it again (0.1 s a name, paid by every process's first compile)."""
    import subprocess

    def refuse(*args, **kwargs):
        raise RuntimeError(f"a program was started: {args[:1]}")
    monkeypatch.setattr(cuda_driver, "_DRIVER_NAMES", ("libcuda-that-does-not-exist.so.1",))
    monkeypatch.setattr(subprocess, "Popen", refuse)
    ok, reason, cap = cuda_driver.probe_driver()
    assert (ok, cap) == (False, None) and "libcuda-that-does-not-exist.so.1" in reason


# ---- fake device ---------------------------------------------------------

# The fake's kernels compute from formulas of their own (not exprvm.kernels.reference),
# so a test that compares a device result with the reference compares two things.
_FORWARD = {
    "tanh": lambda x: 1 - 2 / (np.exp(2 * x) + 1),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "exp": lambda x: np.e ** x,
    "expm1": lambda x: np.e ** x - 1,
    "log1p": lambda x: np.log(1 + x),
    "cube": lambda x: x * x * x,
    "square": lambda x: x * x,
    "relu": lambda x: x * (x > 0),
    "softplus": lambda x: np.log(1 + np.exp(x)),
}
_GRAD = {
    "tanh": lambda x, ans, g: g * (1 - ans * ans),
    "sigmoid": lambda x, ans, g: g * ans * (1 - ans),
    "exp": lambda x, ans, g: g * ans,
    "expm1": lambda x, ans, g: g * (ans + 1),
    "log1p": lambda x, ans, g: g / (1 + x),
    "cube": lambda x, ans, g: 3 * x * x * g,
    "square": lambda x, ans, g: 2 * x * g,
    "relu": lambda x, ans, g: g * (x > 0),
    "softplus": lambda x, ans, g: g / (1 + np.exp(-x)),
}
_BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
           "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
# cudaErrorInvalidValue, cudaErrorNoKernelImageForDevice, cudaErrorIllegalAddress
INVALID_VALUE, NO_KERNEL, ILLEGAL_ADDRESS = 1, 209, 700


class FakeDevice:
    """exprvm's CUDA ABI over memory of its own.

    Device memory is host memory stored scrambled (every byte XOR 0xA5), so a value read
    or written past the memcpy functions (a host/device mix-up) comes out as garbage.
    Every pointer is checked: a kernel's operands and a copy's device side must lie inside
    one live allocation, a copy's host side outside every allocation, so each copy
    direction is distinct. `calls` counts each entry point; `fail[name] = rc` makes the
    next call of `name` fail with rc (`sticky` keeps it failing).
    """

    KEY = 0xA5

    def __init__(self, ffi):
        self.ffi, self.blocks, self.total, self._names = ffi, {}, 1 << 30, {}
        self.calls, self.fail, self.sticky = {}, {}, set()

    def _addr(self, p):
        return int(self.ffi.cast("uintptr_t", p))

    def _call(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1
        rc = self.fail.get(name, 0)
        if rc and name not in self.sticky:
            del self.fail[name]
        return rc

    def _block(self, p, nbytes):
        """(block, offset) when [p, p + nbytes) lies inside one allocation, else None."""
        a = self._addr(p)
        for start, buf in self.blocks.items():
            if start <= a and a + nbytes <= start + len(buf):
                return buf, a - start
        return None

    def _is_device(self, p):
        a = self._addr(p)
        return any(start <= a < start + len(buf) for start, buf in self.blocks.items())

    def _bytes(self, p, nbytes):
        return np.frombuffer(self.ffi.buffer(self.ffi.cast("char*", p), nbytes), np.uint8)

    def ev_cuda_malloc(self, out, nbytes):
        rc = self._call("malloc")
        if rc:
            return rc
        buf = self.ffi.new("char[]", nbytes)
        self.blocks[self._addr(buf)] = buf
        out[0] = self.ffi.cast("void*", buf)
        return 0

    def ev_cuda_free(self, p):
        rc = self._call("free")
        if rc:
            return rc
        addr = self._addr(p)
        if addr and self.blocks.pop(addr, None) is None:
            return INVALID_VALUE  # a double free would be a bug
        return 0

    def ev_cuda_memcpy_htod(self, dst, src, n):
        rc = self._call("htod")
        if rc:
            return rc
        if self._block(dst, n) is None or self._is_device(src):
            return INVALID_VALUE
        self._bytes(dst, n)[:] = self._bytes(src, n) ^ self.KEY
        return 0

    def ev_cuda_memcpy_dtoh(self, dst, src, n):
        rc = self._call("dtoh")
        if rc:
            return rc
        if self._block(src, n) is None or self._is_device(dst):
            return INVALID_VALUE
        self._bytes(dst, n)[:] = self._bytes(src, n) ^ self.KEY
        return 0

    def ev_cuda_memcpy_dtod(self, dst, src, n):
        rc = self._call("dtod")
        if rc:
            return rc
        if self._block(dst, n) is None or self._block(src, n) is None:
            return INVALID_VALUE
        self._bytes(dst, n)[:] = self._bytes(src, n)
        return 0

    def ev_cuda_mem_info(self, free, total):
        rc = self._call("mem_info")
        if rc:
            return rc
        total[0] = self.total
        free[0] = self.total - sum(len(b) for b in self.blocks.values())
        return 0

    def ev_cuda_device_count(self, count):
        rc = self._call("device_count")
        count[0] = 0 if rc else 1
        return rc

    def ev_cuda_error_string(self, rc):
        return self._names.setdefault(rc, self.ffi.new("char[]", b"fake error %d" % rc))

    def ev_cuda_synchronize(self):
        return self._call("synchronize")

    status = 0      # the status word bad inputs set on a real device (ev_cuda.h)

    def ev_cuda_status(self, out, reset):
        out[0] = self.status
        if reset:
            self.status = 0
        return self._call("status")

    def ev_cuda_is_twin(self):
        return 0

    def read(self, p, n, dt):
        """The n values of dtype dt at device pointer p, unscrambled."""
        return (self._bytes(p, n * dt.itemsize) ^ self.KEY).view(dt).copy()

    def write(self, p, values):
        values = np.ascontiguousarray(values)
        self._bytes(p, values.nbytes)[:] = values.view(np.uint8).reshape(-1) ^ self.KEY

    def __getattr__(self, name):
        m = re.fullmatch(r"ev_cuda_(\w+?)(_grad)?_(f32|f64)", name)
        if not m:
            raise AttributeError(name)
        op, grad, dt = m.group(1), m.group(2), np.dtype(np.float32 if m.group(3) == "f32" else np.float64)
        key = f"{op}{grad or ''}"

        def kernel(*args):
            *ptrs, n = args
            rc = self._call(key)
            if rc:
                return rc
            if op not in _BINARY and op not in _FORWARD:
                return NO_KERNEL      # the fake has the elementwise kernels only
            if any(self._block(p, n * dt.itemsize) is None for p in ptrs):
                return ILLEGAL_ADDRESS
            ins = [self.read(p, n, dt).astype(np.float64) for p in ptrs[:-1]]  # as a GPU rounds once
            with np.errstate(all="ignore"):
                if op in _BINARY:
                    out = _BINARY[op](*ins)
                elif grad:
                    out = _GRAD[op](*ins)
                else:
                    out = _FORWARD[op](*ins)
            self.write(ptrs[-1], np.asarray(out, dt))
            return 0
        return kernel


@pytest.fixture
def fake(cuda_state):
    ffi = FFI()
    dev = FakeDevice(ffi)
    loader.use(ffi, dev, "fake device")
    return dev


def test_fake_device_kernels_and_checks(fake):
    x = np.linspace(-3, 3, 50, dtype=np.float32)
    with cuda.tidy():
        dx = cuda.to_device(x)
        y = kernels.unary("tanh", np.float32, "cuda")(dx)
        np.testing.assert_allclose(y.numpy(), np.tanh(x), rtol=1e-6, atol=1e-7)
        g = kernels.unary_grad("tanh", np.float32, "cuda")(dx, y, cuda.to_device(np.ones_like(x)))
        np.testing.assert_allclose(g.numpy(), 1 - y.numpy().astype(np.float64) ** 2, rtol=1e-6)
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


# ---- fake device: each copy direction, the kernels, a whole TapeMachine, failures ----------

def test_fake_copy_directions_are_distinct_and_checked(fake):
    host = np.linspace(-1, 1, 12).astype(np.float32).reshape(3, 4)
    d = cuda.to_device(host)
    assert fake.calls == {"malloc": 1, "htod": 1}
    raw = fake._bytes(d._cptr, d.nbytes)
    assert not np.array_equal(raw, host.view(np.uint8).reshape(-1))   # stored scrambled
    np.testing.assert_array_equal(fake.read(d._cptr, 12, d.dtype), host.reshape(-1))
    out = np.empty_like(host)
    assert d.numpy(out=out) is out and fake.calls["dtoh"] == 1
    np.testing.assert_array_equal(out, host)
    c = d.copy()
    assert fake.calls["dtod"] == 1 and fake.calls["htod"] == 1 and c._cptr != d._cptr
    np.testing.assert_array_equal(c.numpy(), host)
    d.set(host * 3)
    assert fake.calls["htod"] == 2
    np.testing.assert_array_equal(d.numpy(), host * 3)
    np.testing.assert_array_equal(c.numpy(), host)      # a copy, not an alias
    # the fake refuses each direction with the wrong kind of pointer at either end
    lib, ffi, n = fake, fake.ffi, d.nbytes
    hp = ffi.from_buffer(out)
    assert lib.ev_cuda_memcpy_htod(hp, hp, n) == INVALID_VALUE      # dst is host memory
    assert lib.ev_cuda_memcpy_htod(d._cptr, c._cptr, n) == INVALID_VALUE   # src is device
    assert lib.ev_cuda_memcpy_dtoh(hp, hp, n) == INVALID_VALUE      # src is host memory
    assert lib.ev_cuda_memcpy_dtoh(c._cptr, d._cptr, n) == INVALID_VALUE   # dst is device
    assert lib.ev_cuda_memcpy_dtod(d._cptr, hp, n) == INVALID_VALUE
    assert lib.ev_cuda_memcpy_htod(d._cptr, hp, n + 1) == INVALID_VALUE    # past the end
    for a in (d, c):
        a.free()
    assert not fake.blocks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fake_kernels_agree_with_the_reference(fake, dtype):
    x = np.linspace(-3, 3, 101).astype(dtype)
    xp = np.linspace(0.1, 3, 101).astype(dtype)     # log1p's domain
    g = np.cos(np.arange(101)).astype(dtype)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    with cuda.tidy():
        for op in kernels.KERNEL_OPS:
            v = xp if op == "log1p" else x
            ans = reference.FORWARD[op](v, None)
            dv, dans, dg = cuda.to_device(v), cuda.to_device(ans), cuda.to_device(g)
            np.testing.assert_allclose(kernels.unary(op, dtype, "cuda")(dv).numpy(), ans,
                                       rtol=rtol, atol=rtol, err_msg=op)
            np.testing.assert_allclose(kernels.unary_grad(op, dtype, "cuda")(dv, dans, dg).numpy(),
                                       reference.GRAD[op](v, ans, g, None), rtol=rtol, atol=rtol, err_msg=op)
        for op in kernels.BINARY_OPS:
            got = kernels.binary(op, dtype, "cuda")(cuda.to_device(x), cuda.to_device(xp)).numpy()
            np.testing.assert_allclose(got, reference.BINARY[op](x, xp), rtol=rtol, err_msg=op)
    assert not fake.blocks


def _device_graph():
    """Elementwise ops only (each has the fake's kernel), with a gradient seeded by an input."""
    g = ev.Graph()
    x = g.vector("x", 64, np.float32)
    w = g.vector("w", 64, np.float32, value=np.linspace(-1, 1, 64, dtype=np.float32))
    gy = g.vector("gy", 64, np.float32)
    y = ev.tanh(x * w) + ev.sigmoid(x)
    gw = ev.grad(y, w, seed=gy)
    return g, x, w, gy, y, gw


def _by_hand(xs, ws, gys):
    x, w, gy = (a.astype(np.float64) for a in (xs, ws, gys))
    t = np.tanh(x * w)
    return t + 1 / (1 + np.exp(-x)), gy * (1 - t * t) * x


def test_a_library_without_graph_capture_runs_launch_by_launch(fake):
    g, x, w, gy, y, gw = _device_graph()
    with ev.TapeMachine(g, outputs=[y], device="cuda") as m:
        assert m.cuda_graph is None
    with pytest.raises(UsageError, match="cannot capture graphs"):
        ev.TapeMachine(g, outputs=[y], device="cuda", cuda_graph=True)


@pytest.mark.parametrize("placement", [{"device": "cuda"}, {"use_cuda_for": ("tanh",)}])
def test_fake_whole_tape_machine(fake, placement):
    g, x, w, gy, y, gw = _device_graph()
    m = ev.TapeMachine(g, outputs=[y, gw], **placement)
    text = str(m.program)
    assert "to_device" in text and "to_host" in text and "tanh[cuda]" in text
    assert fake.blocks, "device buffers are bound when the machine is made"
    mallocs = fake.calls["malloc"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        xs, gys = rng.uniform(-2, 2, 64).astype(np.float32), rng.uniform(-1, 1, 64).astype(np.float32)
        m.run({x: xs, gy: gys})
        want_y, want_gw = _by_hand(xs, w.value, gys)
        np.testing.assert_allclose(y.value, want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gw.value, want_gw, rtol=1e-5, atol=1e-6)
    assert fake.calls["malloc"] == mallocs, "no allocation on the steady path"
    assert fake.calls["htod"] >= 3 and fake.calls["dtoh"] >= 3
    kernels_run = {k for k in fake.calls if k not in ("malloc", "free", "htod", "dtoh", "dtod", "status")}
    if "device" in placement:
        assert {"mul", "tanh", "sigmoid", "add", "tanh_grad"} <= kernels_run
    else:
        assert kernels_run == {"tanh", "tanh_grad"}, kernels_run   # only what was asked for
    m.close()
    assert not fake.blocks, "close() frees every device buffer"
    with pytest.raises(ExprError, match="this TapeMachine is closed"):
        m.run({x: xs, gy: gys})
    with ev.TapeMachine(g, outputs=[y], device="cuda") as m2:
        m2.run({x: xs, gy: gys})
        assert fake.blocks
    assert not fake.blocks, "leaving the with block frees them too"


def test_fake_failing_kernel_names_the_instruction_and_the_machine_recovers(fake):
    g, x, w, gy, y, gw = _device_graph()
    m = ev.TapeMachine(g, outputs=[y, gw], device="cuda")
    xs, gys = np.ones(64, np.float32), np.ones(64, np.float32)
    fake.fail["sigmoid"] = ILLEGAL_ADDRESS
    with pytest.raises(KernelError, match=r"sigmoid.*instruction \d+.*CUDA kernel sigmoid.*700"):
        m.run({x: xs, gy: gys})
    m.run({x: xs, gy: gys})                       # the next run is whole again
    np.testing.assert_allclose(y.value, _by_hand(xs, w.value, gys)[0], rtol=1e-5)
    fake.fail["htod"] = 2
    with pytest.raises(ExprError, match="host->device|to_device"):
        m.run({x: xs, gy: gys})
    m.close()
    assert not fake.blocks


def test_fake_cuda_error_branches_raise_typed_errors_and_leak_nothing(fake):
    host = np.arange(8, dtype=np.float64)
    fake.fail["malloc"] = 2                        # cudaErrorMemoryAllocation
    with pytest.raises(BackendError, match=r"cudaMalloc\(64 bytes\).*fake error 2"):
        cuda.empty(8, np.float64)
    assert not fake.blocks
    fake.fail["htod"] = 1
    with pytest.raises(BackendError, match="host->device"):
        cuda.to_device(host)
    assert not fake.blocks, "to_device frees its array when the copy fails"
    d = cuda.to_device(host)
    fake.fail["dtoh"] = 1
    with pytest.raises(BackendError, match="device->host"):
        d.numpy()
    np.testing.assert_array_equal(d.numpy(), host)  # the array is still usable
    fake.fail["dtod"] = 1
    with pytest.raises(BackendError, match="device->device"):
        d.copy()
    assert len(fake.blocks) == 1, "the failed copy's new array is freed"
    fake.fail["tanh"] = ILLEGAL_ADDRESS
    with pytest.raises(KernelError, match="CUDA kernel tanh.*700"):
        kernels.unary("tanh", np.float64, "cuda")(d)
    fake.fail["synchronize"] = ILLEGAL_ADDRESS
    with pytest.raises(KernelError, match="cudaDeviceSynchronize"):
        cuda.synchronize()
    fake.fail["mem_info"] = 1
    with pytest.raises(BackendError, match="cudaMemGetInfo"):
        cuda.mem_info()
    fake.fail["device_count"] = 35
    with pytest.raises(BackendError, match="cudaGetDeviceCount.*35"):
        cuda.device_count()
    fake.fail["free"] = 1
    with pytest.raises(BackendError, match="cudaFree"):
        d.free()
    assert d.freed                                 # never freed twice, even after a failure
    fake.blocks.clear()                            # what the failed free left on the fake
    with cuda.tidy():                              # and after all that, the device still works
        y = kernels.unary("exp", np.float64, "cuda")(cuda.to_device(host))
        np.testing.assert_allclose(y.numpy(), np.exp(host), rtol=1e-13)
    assert not fake.blocks
