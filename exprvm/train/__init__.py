"""The training stack: initializers, solvers, learning-rate schedules, checkpoints,
gradient checks, and the Trainer with its extensions.

In: parameter nodes or ev.nn models with .value and .grad, a loader of batches. Out:
updated values, checkpoint files and snapshots, logs and plots, a verdict on gradients.
"""
import types as _types

from . import init, schedules, solvers  # noqa: F401
from .checkpoint import load, save  # noqa: F401
from .gradcheck import check_grad  # noqa: F401
from .trainer import Trainer  # noqa: F401
from .extensions import Extension, LRSchedule  # noqa: F401
from .evaluation import Evaluator, ModelStep  # noqa: F401
from .reports import LogReport, PlotReport, ProgressBar  # noqa: F401
from .snapshot import Snapshot  # noqa: F401

# NOTE: every name imported here is public (a new one flows in), and of the submodules
# only these three (Python sets the others as attributes when they are imported)
__all__ = sorted([n for n, v in list(globals().items()) if not n.startswith("_")
                  and not isinstance(v, _types.ModuleType)] + ["init", "schedules", "solvers"])


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
