"""ev.check_grad itself: it must fail on NaN and Inf, and judge small gradients strictly."""
import numpy as np
import pytest

import exprvm as ev
from exprvm.core import OPS

@pytest.fixture
def custom_ops():
    """Two ops with wrong VJPs, registered for one test only (the op table is global)."""
    # A deliberately wrong VJP (10 % too large), for gradients of any scale.
    scaled = ev.defop("test_gradcheck_scaled", lambda x: x * x, lambda x: (x.shape, x.dtype),
                      vjp=lambda g, ans, x: g * x * 2.2)
    # A VJP that is infinite where the function is smooth.
    infinite = ev.defop("test_gradcheck_infinite", lambda x: x * x, lambda x: (x.shape, x.dtype),
                        vjp=lambda g, ans, x: g / (x - x))
    try:
        yield scaled, infinite
    finally:
        del OPS["test_gradcheck_scaled"], OPS["test_gradcheck_infinite"]


def test_nan_analytic_gradient_fails_naming_the_element():
    # d/dy 0**y is NaN in the VJP while the finite difference is 0: a NaN compares false
    # with every tolerance, so it must be caught before comparing.
    x0 = np.array([1.0, 0.0, 4.0])
    with np.errstate(divide="ignore", invalid="ignore"), pytest.raises(ev.GradCheckError, match=r"argument 0 at index \(1,\)"):
        ev.check_grad(lambda x: ev.sum(ev.sqrt(x)), [x0])


def test_nan_finite_difference_fails_naming_the_element():
    # the analytic gradient is 1 everywhere, but the cost is NaN just below x = 0
    x0 = np.array([1.0, 2.0, 0.0])
    f = lambda x: ev.sum(x + ev.stop_gradient(ev.sqrt(x)) * 0.0)  # noqa: E731
    with np.errstate(invalid="ignore"), pytest.raises(ev.GradCheckError, match=r"finite difference of argument 0 at index \(2,\) is nan"):
        ev.check_grad(f, [x0])


def test_infinite_gradient_fails(custom_ops):
    _, _infinite = custom_ops
    with np.errstate(divide="ignore"):
        with pytest.raises(ev.GradCheckError, match=r"gradient of argument 1 at index \(0,\) is inf"):
            ev.check_grad(lambda x, y: ev.sum(x) + ev.sum(_infinite(y)), [np.ones(2), np.ones(2)])


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e-6])
def test_a_gradient_wrong_by_ten_percent_fails_at_every_scale(scale, custom_ops):
    _scaled, _ = custom_ops
    # The slack of the comparison follows the gradient's size: a fixed absolute slack
    # passed wrong gradients of small functions.
    x0 = np.array([0.5, -1.0, 2.0])
    with pytest.raises(ev.GradCheckError, match="symbolic|autodiff"):
        ev.check_grad(lambda x: ev.sum(_scaled(x)) * scale, [x0])


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e-6, 1e3])
def test_right_gradients_pass_at_every_scale(scale):
    x0 = np.array([0.5, -1.0, 2.0])
    assert ev.check_grad(lambda x: ev.sum(ev.tanh(x) * x) * scale, [x0])
