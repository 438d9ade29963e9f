import os

import numpy as np
import pytest
from hypothesis import settings

# Keep property tests bounded so the whole suite stays fast on 2 cores. "ci" (the default)
# is derandomized: every run draws the same examples, so a red run is reproducible and
# a green one is not luck. `make test-deep` loads "deep": fresh random examples, ten
# times as many (tests/budget.py scales the counts tests set themselves).
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("deep", max_examples=300, deadline=None, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _independent_replay_cache():
    """Each test starts with no LispMachine structure seen (see exprvm/replay.py), so no
    test's outcome depends on which tests ran before it."""
    from exprvm.machines import replay
    replay.clear()
    yield


@pytest.fixture(params=["own", "blas"])
def gemm_path(request):
    """Both float32 product paths of the C backend on every machine (the gate,
    gemm.preferred(), picks one by CPU): "own", csrc/ev_gemm.c (the conv runners of
    csrc/ev_conv_gemm.c, matmul[c]); "blas", im2col and numpy's BLAS."""
    from exprvm.kernels import gemm
    if request.param == "own" and not gemm.available():
        pytest.skip("the C extension with exprvm's product is not built")
    with gemm.forced(request.param == "own"):
        yield request.param
