"""The LispMachine's logger: every node of the forward walk and every gradient the backward
pass adds, with values formatted as asked (value_fmt, Gorgonia's WithValueFmt)."""
import logging

import numpy as np
import pytest

import exprvm as ev


def small():
    g = ev.Graph()
    w = g.vector("w", 2, value=np.array([0.5, -1.25]))
    x = g.vector("x", 2, value=np.array([2.0, 4.0]))
    cost = ev.sum(ev.tanh(w * x))
    return g, w, x, cost


def test_the_backward_pass_is_logged_after_the_forward_walk():
    g, w, x, cost = small()
    lines = []
    ev.LispMachine(g, cost=cost, logger=lines.append).run()
    fwd = [ln for ln in lines if " = " in ln.split("->")[0] and not ln.startswith(("d", "backward"))]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("backward from sum#"))
    assert [ln.split(" = ")[1].split("(")[0] for ln in fwd] == ["mul", "tanh", "sum"]
    assert all(lines.index(ln) < start for ln in fwd)
    back = lines[start + 1:]
    assert any(ln.startswith("dtanh#") and "vjp of sum#" in ln for ln in back)
    assert any(ln.startswith("dw += vjp of mul#") and "wrt input 0 -> (2,)" in ln for ln in back)
    assert any(ln.startswith("dx += vjp of mul#") and "wrt input 1" in ln for ln in back)
    assert back[-2:] == ["w.grad -> (2,)", "x.grad -> (2,)"]


@pytest.mark.parametrize("fmt, want", [
    (".2f", "w.grad -> (2,) = [{:.2f} {:.2f}]"),
    ("{:+.1e}", "w.grad -> (2,) = [{:+.1e} {:+.1e}]"),
])
def test_values_are_formatted_as_asked(fmt, want):
    g, w, x, cost = small()
    lines = []
    ev.LispMachine(g, cost=cost, logger=lines.append, value_fmt=fmt).run()
    d = x.value * (1 - np.tanh(w.value * x.value) ** 2)
    assert want.format(*d) in lines
    assert f"sum#{cost.id} = sum(tanh#{cost.inputs[0].id}) -> () = {format(float(cost.value), fmt.strip('{:}'))}" \
        in lines
    assert any(ln.startswith("backward from") and ln.endswith(format(1.0, fmt.strip("{:}"))) for ln in lines)


def test_a_callable_formatter_and_a_logging_logger():
    g, w, x, cost = small()
    log = logging.getLogger("exprvm-test-lisp-log")
    seen = []
    log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: seen.append(r.getMessage())})())
    log.setLevel(logging.DEBUG)
    ev.LispMachine(g, cost=cost, logger=log, value_fmt=lambda v: f"<{np.asarray(v).size} values>").run()
    assert "w.grad -> (2,) = <2 values>" in seen and any("= <1 values>" in s for s in seen)


def test_large_values_are_summarised_and_bad_formats_refused():
    g = ev.Graph()
    v = g.vector("v", 1000, value=np.arange(1000.0))
    lines = []
    ev.LispMachine(g, cost=ev.sum(v * 2.0), logger=lines.append, value_fmt=".0f").run()
    grad_line = next(ln for ln in lines if ln.startswith("v.grad"))
    assert "..." in grad_line and len(grad_line) < 200
    with pytest.raises(ev.ExprError, match="value_fmt 'q' cannot format a number"):
        ev.LispMachine(g, cost=ev.sum(v), logger=lines.append, value_fmt="q")
    with pytest.raises(ev.ExprError, match="value_fmt must be"):
        ev.LispMachine(g, cost=ev.sum(v), value_fmt=3)
