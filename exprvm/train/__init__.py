"""The training stack: initializers, solvers, checkpoints and gradient checks.

In: parameter nodes or ev.nn models with .value and .grad. Out: updated values,
checkpoint files, a verdict on gradients.
"""
from . import init, solvers  # noqa: F401
from .checkpoint import load, save  # noqa: F401
from .gradcheck import check_grad  # noqa: F401
