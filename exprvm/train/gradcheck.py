"""ev.check_grad: compare autodiff and symbolic gradients with central differences."""
import numpy as np

from ..errors import GradCheckError
from ..core import check_cost, grad
from ..core import Graph, ancestors
from ..machines import LispMachine


def check_grad(fn, arrays, eps=1e-6, rtol=1e-5, atol=1e-7):
    """fn(*nodes) -> scalar node. Returns True or raises GradCheckError with the worst element.

    Runs in float64 (finite differences in float32 are too coarse to judge).
    Both gradients are checked: the LispMachine's run-time autodiff and ev.grad's
    symbolic nodes.
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
    auto = [n.grad.copy() if n in sym else z for n, z in zip(nodes, zero)]
    symbolic = [np.broadcast_to(sym[n].value, n.shape).copy() if n in sym else z for n, z in zip(nodes, zero)]

    forward = LispMachine(g, fwd_only=True, outputs=[cost])

    def f():
        forward.run()
        return float(cost.value)

    worst = (0.0, None)
    for k, (node, a) in enumerate(zip(nodes, arrays)):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            orig = node.value[idx]
            node.value[idx] = orig + eps
            fp = f()
            node.value[idx] = orig - eps
            fm = f()
            node.value[idx] = orig
            numeric[idx] = (fp - fm) / (2 * eps)
        for kind, got in (("autodiff", auto[k]), ("symbolic", symbolic[k])):
            err = np.abs(got - numeric) / (atol + rtol * np.abs(numeric) + 10 * eps)
            if err.size and err.max() > worst[0]:
                i = np.unravel_index(np.argmax(err), err.shape)
                worst = (float(err.max()), (kind, k, i, got[i], numeric[i]))
    if worst[0] > 1.0:
        kind, k, i, got, num = worst[1]
        raise GradCheckError(f"{kind} gradient of argument {k} at index {tuple(int(j) for j in i)}: "
                             f"{got:.9g} vs finite difference {num:.9g}")
    return True
