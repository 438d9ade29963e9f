"""A loop body's outputs written where the loop keeps them: a fused group's stored member
goes from its kernel straight into the loop's memory (no copy instruction after it), and
only where nothing else reads the member's place in the group's value (an instruction
of the body that read the member reads it from the loop's memory instead).

Checked: the kernel entry point with members stored apart (values, the untouched place,
refused arrays), the numpy row doing the same, an LSTM scan's body (no forward copy,
values and gradients as the unrolled graph's; no copy in its gradient body either, whose
gate gradients go side by side into one output), bodies where a member is also read
inside the body or is an output twice, and verify() refusing a bad redirect.
"""
import numpy as np
import pytest

import exprvm as ev
from exprvm.compiler.lowering.fused import EXAMPLE
from exprvm.compiler.options import CompileOptions
from exprvm.compiler.lowering.table import Request, lower
from exprvm.errors import CompileError, KernelError, ShapeError
from exprvm.kernels import generated

F32 = np.float32
# the fused program itself, not a first tier that runs unfused while its kernels build
SYNC = {"fuse": "sync"} if "sync" in (CompileOptions.__doc__ or "") else {}
needs_cc = pytest.mark.skipif(not generated.available()[0], reason="no C compiler for fused kernels")


def _example_inputs(rng):
    return [rng.standard_normal((3, 4)).astype(F32), rng.standard_normal(4).astype(F32),
            np.full((), 0.7, F32)]


@needs_cc
def test_the_kernel_stores_a_member_in_its_own_array(rng):
    k = EXAMPLE.kernel(F32)
    generated.prepare([k])
    ins = _example_inputs(rng)
    packed = np.zeros((2, 3, 4), F32)
    generated.bind(k, ins, packed, (3, 4))()
    out, member = np.full((2, 3, 4), 7.0, F32), np.zeros((3, 4), F32)
    generated.bind(k, ins, out, (3, 4), members={1: member})()
    np.testing.assert_array_equal(member, packed[1])
    np.testing.assert_array_equal(out[0], packed[0])
    assert (out[1] == 7.0).all()            # its place in the value is left alone
    both = [np.zeros((3, 4), F32), np.zeros((3, 4), F32)]
    generated.bind(k, ins, out, (3, 4), members=dict(enumerate(both)))()
    np.testing.assert_array_equal(np.stack(both), packed)
    side = np.zeros((3, 9), F32)            # side by side in one array's columns
    generated.bind(k, ins, out, (3, 4), members={0: side[:, :4], 1: side[:, 4:8]})()
    np.testing.assert_array_equal(side[:, :8], np.concatenate(list(packed), axis=1))
    assert (side[:, 8] == 0).all()


@needs_cc
def test_the_kernel_refuses_member_arrays_it_cannot_write(rng):
    k = EXAMPLE.kernel(F32)
    ins = _example_inputs(rng)
    out = np.zeros((2, 3, 4), F32)
    with pytest.raises(KernelError, match="overlaps"):
        generated.bind(k, ins, out, (3, 4), members={0: out[1]})
    with pytest.raises(KernelError, match="overlaps"):
        generated.bind(k, ins, out, (3, 4), members={0: ins[0]})
    with pytest.raises(ShapeError, match="member 0"):
        generated.bind(k, ins, out, (3, 4), members={0: np.zeros((4, 3), F32)})
    with pytest.raises(KernelError, match="no stored member 2"):
        generated.bind(k, ins, out, (3, 4), members={2: np.zeros((3, 4), F32)})
    with pytest.raises(KernelError, match="rows must be contiguous"):
        generated.bind(k, ins, out, (3, 4), members={0: np.zeros((4, 3), F32).T})


def test_the_numpy_row_stores_members_apart_too(rng):
    ins = _example_inputs(rng)
    req = Request("fused", {"group": EXAMPLE}, [a.shape for a in ins], [a.dtype for a in ins],
                  EXAMPLE.out_shape, np.dtype(F32), [None] * 3, "cpu", "numpy")
    low = lower(req)
    assert low.members == ((0,), (1,))
    out, member = np.zeros((2, 3, 4), F32), np.zeros((3, 4), F32)
    fn, args = low.build(ins, out, [], {0: member})
    fn(*args)
    np.testing.assert_allclose(member, EXAMPLE.evaluate(ins)[0], rtol=1e-6)


def _lstm(g, T, B, H, rng, scan=True):
    Wx = g.matrix("Wx", (H, 4 * H), dtype=F32, value=(rng.standard_normal((H, 4 * H)) * 0.3).astype(F32))
    Wh = g.matrix("Wh", (H, 4 * H), dtype=F32, value=(rng.standard_normal((H, 4 * H)) * 0.3).astype(F32))
    xs = g.tensor("xs", (T, B, H), dtype=F32)

    def step(carry, x):
        h, c = carry
        z = x @ Wx + h @ Wh
        i, f, o, u = (z[:, j * H:(j + 1) * H] for j in range(4))
        c = ev.sigmoid(f) * c + ev.sigmoid(i) * ev.tanh(u)
        h = ev.sigmoid(o) * ev.tanh(c)
        return (h, c), h

    zero = np.zeros((B, H), F32)
    if scan:
        _, hs = ev.scan(step, (zero, zero), xs)
        cost = ev.sum(hs * hs)
    else:
        carry, total = (g.constant(zero), g.constant(zero)), 0.0
        for t in range(T):
            carry, h = step(carry, xs[t])
            total = total + ev.sum(h * h)
        cost = total
    return cost, [Wx, Wh], xs


@needs_cc
def test_an_lstm_scan_body_writes_its_carries_from_the_kernel(rng):
    T, B, H = 6, 3, 5
    x = rng.standard_normal((T, B, H)).astype(F32)
    results = []
    for scan in (True, False):
        g = ev.Graph()
        cost, params, xs = _lstm(g, T, B, H, np.random.default_rng(1), scan)
        grads = ev.grad(cost, params)
        m = ev.TapeMachine(g, outputs=[cost, *grads], **SYNC)
        results.append(m.run({xs: x}))
        if scan:
            m.program.verify()
            loop = next(ins for ins in m.program.instrs if ins.bodies)
            body = loop.bodies[0]
            fused = [ins for ins in body.instrs if ins.op == "fused"]
            assert any(ins.redirect for ins in fused), str(body)
            for loop in (ins for ins in m.program.instrs if ins.bodies):     # gradient too
                assert not [ins for ins in loop.bodies[0].instrs if ins.op == "copy"], str(m.program)
            assert "{" in str(m.program)        # the disassembly shows where members go
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@needs_cc
@pytest.mark.parametrize("case", ["read inside", "output twice"])
def test_a_member_read_elsewhere_is_right(case, rng):
    """read inside: the product reads the member from the loop's memory; output twice:
    the second output copies the first."""
    g = ev.Graph()
    xs = g.tensor("xs", (4, 2, 3), dtype=F32)
    W = g.matrix("W", (3, 3), dtype=F32, value=(rng.standard_normal((3, 3)) * 0.5).astype(F32))

    def step(h, x):
        a = ev.tanh(h @ W + x)
        b = ev.sigmoid(a) * 2.0             # a and b: two stored members of one group
        if case == "read inside":
            return b, (a, a @ W)            # a also read by a product in the body
        return b, (a, a)                    # a an output twice

    h, (ys, zs) = ev.scan(step, np.zeros((2, 3), F32), xs)
    m = ev.TapeMachine(g, outputs=[h, ys, zs], **SYNC)
    x = rng.standard_normal((4, 2, 3)).astype(F32)
    got = m.run({xs: x})
    m.program.verify()
    # numpy loop
    hv, ya, za = np.zeros((2, 3), F32), [], []
    for t in range(4):
        a = np.tanh(hv @ W.value + x[t])
        hv = 2.0 / (1.0 + np.exp(-a))
        ya.append(a)
        za.append(a @ W.value if case == "read inside" else a)
    for a, b in zip(got, (hv, np.stack(ya), np.stack(za))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@needs_cc
def test_verify_refuses_a_member_written_into_a_register_that_is_not_a_loop_output(rng):
    g = ev.Graph()
    xs = g.tensor("xs", (4, 2, 3), dtype=F32)

    def step(h, x):
        a = ev.tanh(h + x)
        return a * 2.0, a

    h, ys = ev.scan(step, np.zeros((2, 3), F32), xs)
    m = ev.TapeMachine(g, outputs=[h, ys], **SYNC)
    body = next(ins for ins in m.program.instrs if ins.bodies).bodies[0]
    fused = next(ins for ins in body.instrs if ins.members)
    assert fused.redirect and body.verify()
    ext = fused.redirect[0][1]
    assert body.registers[ext].kind == "external"
    for bad in (((0, fused.out, None),), ((0, ext, None), (1, ext, None))):   # a buffer; one output twice
        fused.redirect = bad
        with pytest.raises(CompileError, match="member"):
            body.verify()
