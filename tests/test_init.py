import math

import numpy as np
import pytest

from exprvm.train import init
from exprvm.errors import DTypeError, ExprError, ShapeError

RANDOM = [
    init.uniform, init.normal,
    init.glorot_normal, init.glorot_uniform, init.he_normal, init.he_uniform,
]
ALL = [init.zeros, init.ones, lambda: init.constant(0.25)] + [lambda f=f: f(seed=0) for f in RANDOM]
ALL_IDS = ["zeros", "ones", "constant"] + [f.__name__ for f in RANDOM]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (4, 3, 2, 2)])
@pytest.mark.parametrize("factory", ALL, ids=ALL_IDS)
def test_shape_and_dtype(factory, shape, dtype):
    values = factory()(shape, dtype)
    assert isinstance(values, np.ndarray)
    assert values.shape == shape and values.dtype == dtype


def test_int_shape_means_a_vector():
    assert init.normal(seed=1)(5, np.float32).shape == (5,)


def test_constant_values():
    np.testing.assert_array_equal(init.zeros()((2, 3), np.float32), np.zeros((2, 3)))
    np.testing.assert_array_equal(init.ones()((4,), np.float64), np.ones(4))
    np.testing.assert_array_equal(init.constant(-1.5)((2, 2), np.float32), np.full((2, 2), -1.5))


def test_fans_follow_the_out_in_convention():
    assert init.fans(()) == (1, 1)
    assert init.fans((7,)) == (7, 7)
    assert init.fans((30, 20)) == (20, 30)                 # W @ x: (fan_out, fan_in)
    assert init.fans((16, 8, 3, 3)) == (8 * 9, 16 * 9)     # (out, in, *receptive field)


# -- statistics on large draws ----------------------------------------------------

SHAPE = (400, 600)                          # fan_in 600, fan_out 400
GLOROT_STD = math.sqrt(2.0 / (600 + 400))
HE_STD = math.sqrt(2.0 / 600)


@pytest.mark.parametrize("factory,std,bound", [
    (init.glorot_normal, GLOROT_STD, None),
    (init.glorot_uniform, GLOROT_STD, math.sqrt(3) * GLOROT_STD),
    (init.he_normal, HE_STD, None),
    (init.he_uniform, HE_STD, math.sqrt(3) * HE_STD),
])
def test_variance_scaling_statistics(factory, std, bound):
    values = factory(seed=5)(SHAPE, np.float64)
    assert abs(values.mean()) < 0.02 * std
    assert values.std() == pytest.approx(std, rel=0.02)
    if bound is not None:
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.99 * bound


def test_gain_scales_the_std():
    plain = init.he_normal(seed=2)(SHAPE, np.float64)
    doubled = init.he_normal(gain=2.0, seed=2)(SHAPE, np.float64)
    np.testing.assert_allclose(doubled, 2.0 * plain)


def test_uniform_and_normal_parameters():
    u = init.uniform(low=2.0, high=3.0, seed=0)((100_000,), np.float64)
    assert u.min() >= 2.0 and u.max() < 3.0
    assert u.mean() == pytest.approx(2.5, abs=0.01)
    n = init.normal(mean=-1.0, std=0.5, seed=0)((100_000,), np.float64)
    assert n.mean() == pytest.approx(-1.0, abs=0.01)
    assert n.std() == pytest.approx(0.5, rel=0.02)


def test_rank4_uses_receptive_field():
    values = init.he_normal(seed=3)((64, 32, 3, 3), np.float64)
    assert values.std() == pytest.approx(math.sqrt(2.0 / (32 * 9)), rel=0.03)


# -- seeding -------------------------------------------------------------------

@pytest.mark.parametrize("factory", RANDOM, ids=[f.__name__ for f in RANDOM])
def test_explicit_seed_is_reproducible_and_seeds_differ(factory):
    a = factory(seed=11)
    np.testing.assert_array_equal(a((5, 6), np.float64), a((5, 6), np.float64))
    np.testing.assert_array_equal(a((5, 6), np.float64), factory(seed=11)((5, 6), np.float64))
    assert not np.array_equal(a((5, 6), np.float64), factory(seed=12)((5, 6), np.float64))


def test_same_seed_gives_the_same_numbers_in_float32_and_float64():
    f64 = init.glorot_uniform(seed=4)((3, 3), np.float64)
    f32 = init.glorot_uniform(seed=4)((3, 3), np.float32)
    np.testing.assert_array_equal(f32, f64.astype(np.float32))


def build_model():
    # a "model": several parameters drawn from the module RNG, in order
    return [init.glorot_normal()((4, 3), np.float32),
            init.uniform()((3,), np.float32),
            init.he_uniform()((2, 4), np.float64)]


def test_module_seed_makes_a_model_reproducible():
    init.seed(123)
    first = build_model()
    second = build_model()
    assert not np.array_equal(first[0], second[0])       # the RNG moves on between draws
    init.seed(123)
    again = build_model()
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    init.seed(124)
    assert not np.array_equal(build_model()[0], first[0])


# -- errors ----------------------------------------------------------------------

def test_random_init_needs_a_float_dtype():
    with pytest.raises(DTypeError, match="glorot_normal"):
        init.glorot_normal(seed=0)((2, 2), np.int32)
    # a non-random initializer may fill an integer tensor
    assert init.zeros()((2,), np.int32).dtype == np.int32


def test_bad_shapes():
    with pytest.raises(ShapeError):
        init.zeros()((2, -1), np.float64)
    with pytest.raises(ShapeError):
        init.normal(seed=0)("34", np.float64)


def test_bad_arguments():
    with pytest.raises(ExprError, match=r"init.uniform: need low < high, got low=1.0, high=1.0"):
        init.uniform(low=1.0, high=1.0)
    with pytest.raises(ExprError, match=r"init.normal: std must be >= 0, got -1.0"):
        init.normal(std=-1.0)
    with pytest.raises(ExprError, match=r"init.glorot_normal: gain must be >= 0, got -1.0"):
        init.glorot_normal(gain=-1.0)
    with pytest.raises(ExprError, match=r"init.constant: value must be a scalar, got list"):
        init.constant([1, 2])


def test_repr_shows_the_recipe():
    assert repr(init.he_normal(gain=2.0, seed=7)) == "init.he_normal(gain=2.0, seed=7)"
    assert repr(init.constant(3)) == "init.constant(v=3)"
