"""Parameter initializers.

Each factory returns a callable ``init(shape, dtype) -> np.ndarray`` that a
graph calls once when it creates a parameter::

    W = g.matrix("W", (3, 4), init=ev.init.glorot_normal(), dtype=np.float32)

Fan-in and fan-out (see ``fans``) follow the ``W @ x`` convention: a matrix
has shape ``(fan_out, fan_in)``. A tensor of rank > 2 has shape
``(out_channels, in_channels, *receptive_field)`` and both fans are scaled by
the receptive-field size. A vector of length n has fan_in = fan_out = n, and a
scalar has fan_in = fan_out = 1.

Randomness: with ``seed=None`` values are drawn from one module RNG, which
``seed(n)`` resets, so a whole model built after ``ev.init.seed(n)`` is
reproducible. With an explicit seed the initializer returns the same values on
every call. Random values are drawn in float64 and then cast, so the same seed
gives the same numbers (up to rounding) in float32 and float64.
"""

import math

import numpy as np

from ..errors import DTypeError, ExprError, ShapeError

_rng = np.random.default_rng()


def seed(n):
    """Reset the module RNG used by every initializer built with seed=None."""
    global _rng
    _rng = np.random.default_rng(n)


def fans(shape):
    """(fan_in, fan_out) of a parameter of this shape; see the module docstring."""
    shape = _shape(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    """A named, reproducible recipe for a parameter's first value."""

    def __init__(self, name, args, draw, seed=None, random=True):
        self.name = name
        self.args = args
        self.seed = seed
        self._draw = draw          # draw(rng, shape) -> float64 array (rng None if not random)
        self._random = random

    def __call__(self, shape, dtype=np.float64):
        shape = _shape(shape)
        dtype = np.dtype(dtype)
        if self._random and dtype.kind != "f":
            raise DTypeError(f"init.{self.name}: random values need a float dtype, got {dtype}")
        if self._random:
            rng = _rng if self.seed is None else np.random.default_rng(self.seed)
        else:
            rng = None
        values = self._draw(rng, shape)
        return np.asarray(values).astype(dtype, copy=False)

    def __repr__(self):
        args = dict(self.args)
        if self._random:
            args["seed"] = self.seed
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"init.{self.name}({inner})"


def zeros():
    """An initializer of zeros: ``g.vector("b", 3, init=ev.init.zeros())``."""
    return Initializer("zeros", {}, lambda rng, shape: np.zeros(shape), random=False)


def ones():
    """An initializer of ones."""
    return Initializer("ones", {}, lambda rng, shape: np.ones(shape), random=False)


def constant(v):
    """An initializer filling every element with the scalar ``v``.

    Raises
    ------
    ExprError
        If ``v`` is not a scalar.
    """
    if not np.isscalar(v):
        raise ExprError(f"init.constant: value must be a scalar, got {type(v).__name__}")
    return Initializer("constant", {"v": v}, lambda rng, shape: np.full(shape, v), random=False)


def uniform(low=-0.1, high=0.1, seed=None):
    """An initializer drawing uniformly from ``[low, high)``.

    Parameters
    ----------
    low, high : float
        ``low < high``.
    seed : int, optional
        Equal seeds draw equal values; None draws from ``ev.init.seed``'s stream.
    """
    if not low < high:
        raise ExprError(f"init.uniform: need low < high, got low={low}, high={high}")
    return Initializer("uniform", {"low": low, "high": high},
                       lambda rng, shape: rng.uniform(low, high, shape), seed)


def normal(mean=0.0, std=0.01, seed=None):
    """An initializer drawing from a normal distribution.

    Parameters
    ----------
    mean : float, default 0.0
    std : float, default 0.01
        >= 0.
    seed : int, optional
        Equal seeds draw equal values; None draws from ``ev.init.seed``'s stream.
    """
    _check_nonneg("normal", "std", std)
    return Initializer("normal", {"mean": mean, "std": std},
                       lambda rng, shape: rng.normal(mean, std, shape), seed)


def glorot_normal(gain=1.0, seed=None):
    """Normal with std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check_nonneg("glorot_normal", "gain", gain)

    def draw(rng, shape):
        fan_in, fan_out = fans(shape)
        return rng.normal(0.0, gain * math.sqrt(2.0 / _atleast1(fan_in + fan_out)), shape)

    return Initializer("glorot_normal", {"gain": gain}, draw, seed)


def glorot_uniform(gain=1.0, seed=None):
    """Uniform on [-a, a], a = gain * sqrt(6 / (fan_in + fan_out)): same variance as glorot_normal."""
    _check_nonneg("glorot_uniform", "gain", gain)

    def draw(rng, shape):
        fan_in, fan_out = fans(shape)
        a = gain * math.sqrt(6.0 / _atleast1(fan_in + fan_out))
        return rng.uniform(-a, a, shape)

    return Initializer("glorot_uniform", {"gain": gain}, draw, seed)


def he_normal(gain=1.0, seed=None):
    """Normal with std = gain * sqrt(2 / fan_in), for ReLU layers."""
    _check_nonneg("he_normal", "gain", gain)

    def draw(rng, shape):
        fan_in, _ = fans(shape)
        return rng.normal(0.0, gain * math.sqrt(2.0 / _atleast1(fan_in)), shape)

    return Initializer("he_normal", {"gain": gain}, draw, seed)


def he_uniform(gain=1.0, seed=None):
    """Uniform on [-a, a], a = gain * sqrt(6 / fan_in): same variance as he_normal."""
    _check_nonneg("he_uniform", "gain", gain)

    def draw(rng, shape):
        fan_in, _ = fans(shape)
        a = gain * math.sqrt(6.0 / _atleast1(fan_in))
        return rng.uniform(-a, a, shape)

    return Initializer("he_uniform", {"gain": gain}, draw, seed)


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if isinstance(shape, (str, bytes)):
        raise ShapeError(f"init: shape must be an int or a tuple of ints, got {shape!r}")
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"init: shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise ShapeError(f"init: negative dimension in shape {shape}")
    return shape


def _atleast1(n):
    # NOTE: an empty tensor has a zero fan; its scale is never used, but must not divide by zero.
    return max(n, 1)


def _check_nonneg(fn, name, value):
    if not value >= 0:
        raise ExprError(f"init.{fn}: {name} must be >= 0, got {value}")

__all__ = ["Initializer", "constant", "fans", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
           "normal", "ones", "seed", "uniform", "zeros"]


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
