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
