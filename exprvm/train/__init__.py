"""The training stack: initializers, solvers, learning-rate schedules, checkpoints and
gradient checks.

In: parameter nodes or ev.nn models with .value and .grad. Out: updated values,
checkpoint files, a verdict on gradients.
"""
from . import init, schedules, solvers  # noqa: F401
from .checkpoint import load, save  # noqa: F401
from .gradcheck import check_grad  # noqa: F401

__all__ = ["check_grad", "init", "load", "save", "schedules", "solvers"]


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
