"""Tools some tests need beyond the package: skipped, with the reason, on a machine
without them; a failure under CI=true, where `make test` installs every one of them
(torch, mpi4py and Open MPI, iproute2 and root for the network namespaces), so that
no reference and no MPI test can stop running in CI unseen.

    needs_torch = needs(torch is not None, "PyTorch is not installed")
    @needs_torch
    def test_...(): ...

    require(shutil.which("ip") is not None, "iproute2 is not installed")   # in a test
"""
import functools
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok, reason):
    """Inside a test: go on when ok; else skip with the reason, or fail under CI=true."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: CI installs it, so this is a failure, not a skip)")
    pytest.skip(reason)


def needs(ok, reason):
    """A decorator for tests that need what `ok` says is there (see require)."""
    def wrap(test):
        if ok:
            return test

        @functools.wraps(test)
        def refused(*args, **kwargs):
            require(False, reason)
        return refused
    return wrap
