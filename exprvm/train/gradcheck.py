"""ev.check_grad: compare autodiff and symbolic gradients with central differences."""
import numpy as np

from ..errors import GradCheckError
from ..core import check_cost, grad
from ..core import Graph, ancestors
from ..machines import LispMachine

# NOTE: a central difference of a float64 function carries two errors: truncation, of
# order eps**2 times the third derivative, and rounding, about (machine epsilon * |f|) /
# eps. The slack below covers both, scaled to the size of the gradient and of the cost,
# so that small gradients are judged as strictly as large ones.
_ROUNDING = 100 * np.finfo(np.float64).eps


def check_grad(fn, arrays, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Compare both machines' gradients of ``fn`` with central finite differences.

    Parameters
    ----------
    fn : callable
        ``fn(*nodes) -> node``: builds a scalar cost from one node per array.
    arrays : list of array_like
        The point at which the gradient is checked (converted to float64: finite
        differences in float32 are too coarse to judge).
    eps : float
        The finite-difference step.
    rtol, atol : float
        Relative and absolute tolerance of each element.

    Returns
    -------
    True

    Raises
    ------
    GradCheckError
        Naming the gradient (autodiff: the LispMachine's run-time autodiff; symbolic:
        ev.grad's nodes), the argument and the element that differs most, or the first
        element where either gradient or the finite difference is NaN or infinite.

    Examples
    --------
    >>> ev.check_grad(lambda W, b: ev.sum(ev.tanh(W @ b)), [np.ones((2, 3)), np.ones(3)])
    True
    """
    g = Graph("check_grad")
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    nodes = [g.tensor(f"arg{i}", a.shape, value=a.copy()) for i, a in enumerate(arrays)]
    cost = fn(*nodes)
    check_cost(cost, "check_grad")
    # An argument fn ignores has a zero gradient (ev.grad itself would refuse it).
    used = {n.id for n in ancestors([cost])}
    live = [n for n in nodes if n.id in used]
    sym = dict(zip(live, grad(cost, live))) if live else {}
    # NOTE: the walk itself is under test here, never a replayed program.
    LispMachine(g, cost=cost, outputs=list(sym.values()), replay=False).run()
    zero = [np.zeros(n.shape) for n in nodes]
    auto = [np.array(n.grad, dtype=np.float64) if n in sym else z for n, z in zip(nodes, zero)]
    symbolic = [np.broadcast_to(sym[n].value, n.shape).astype(np.float64) if n in sym else z
                for n, z in zip(nodes, zero)]

    forward = LispMachine(g, fwd_only=True, outputs=[cost])

    def f():
        forward.run()
        return float(cost.value)

    f0 = f()
    worst = (0.0, None)
    for k, (node, a) in enumerate(zip(nodes, arrays)):
        numeric = np.zeros_like(a)
        fscale = abs(f0) if np.isfinite(f0) else 0.0
        for idx in np.ndindex(a.shape):
            orig = node.value[idx]
            node.value[idx] = orig + eps
            fp = f()
            node.value[idx] = orig - eps
            fm = f()
            node.value[idx] = orig
            numeric[idx] = (fp - fm) / (2 * eps)
            fscale = max(fscale, abs(fp), abs(fm))
        _check_finite("finite difference", k, numeric)
        gscale = float(np.abs(numeric).max()) if numeric.size else 0.0
        slack = 10 * eps * gscale + _ROUNDING * fscale / eps
        for kind, got in (("autodiff", auto[k]), ("symbolic", symbolic[k])):
            _check_finite(f"{kind} gradient", k, got, numeric)
            err = np.abs(got - numeric) / (atol + rtol * np.abs(numeric) + slack)
            if err.size and err.max() > worst[0]:
                i = np.unravel_index(np.argmax(err), err.shape)
                worst = (float(err.max()), (kind, k, i, got[i], numeric[i]))
    if worst[0] > 1.0:
        kind, k, i, got, num = worst[1]
        raise GradCheckError(f"check_grad: {kind} gradient of argument {k} at index {_index(i)}: "
                             f"{got:.9g} vs finite difference {num:.9g}")
    return True


def _index(i):
    return tuple(int(j) for j in i)


def _check_finite(what, k, values, numeric=None):
    """GradCheckError at the first NaN or infinite element (a NaN compares false with any
    tolerance, so it would otherwise pass)."""
    bad = ~np.isfinite(values)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), values.shape)
        versus = "" if numeric is None else f" (finite difference {numeric[i]:.9g})"
        raise GradCheckError(f"check_grad: {what} of argument {k} at index {_index(i)} is "
                             f"{values[i]}{versus}")
