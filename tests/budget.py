"""How many examples a property test draws when it sets its own count: that count under
the default "ci" profile, ten times it under `make test-deep` (HYPOTHESIS_PROFILE=deep).

    @settings(max_examples=examples(40), deadline=None)
"""
import os

DEEP_FACTOR = 10


def examples(n):
    """n, or DEEP_FACTOR * n under the deep profile."""
    return n * DEEP_FACTOR if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else n
