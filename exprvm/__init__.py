"""exprvm: expression graphs that compile to a bytecode tape (TapeMachine) or run node
by node with run-time autodiff (LispMachine).

This module is the public API only; the stages live in packages, in data-flow order:
core (graph, op record, grad) -> ops (op definitions) -> compiler (Graph -> Program)
-> machines (run it) -> kernels (numpy, C, CUDA); beside them train, nn, render, data and
tracing (ev.function). See docs/guide/architecture.md.

`__all__` holds the names imported here that a package publishes in its own `__all__`
(errors, ops, machines, train, render, tracing, ...), so a name a package adds to its
`__all__` and imports here is public without a list of its own here.
"""
import sys as _sys
import types as _types

from .errors import *  # noqa: F401,F403
from .core import Graph, Node, ancestors, from_dlpack, let  # noqa: F401
from .ops import *  # noqa: F401,F403
from .ops import abs, max, min, pow, round, sum  # noqa: F401  (numpy's names shadow builtins on purpose)
from .ops import random  # noqa: F401  (ev.random.normal / uniform / bernoulli)
from .machines import LispMachine, TapeMachine, replay, steady_gc  # noqa: F401
from .train import check_grad, init, load, save, schedules, solvers  # noqa: F401
from .render import render, to_dot  # noqa: F401
from .tracing import function, grad, value_and_grad  # noqa: F401  (grad: both forms)
from . import nn  # noqa: F401
from . import distributed  # noqa: F401  (imports mpi4py only in ev.distributed.init())
from . import data  # noqa: F401  (ev.data.DataLoader, ArrayDataset, TextStreams)
from .kernels import backends, get_backend, set_backend  # noqa: F401
from . import cuda  # noqa: F401
from . import onnx  # noqa: F401  (imports the onnx package only when ev.onnx.load / export run)
from .cuda import tidy  # noqa: F401

__version__ = "0.1.0"

_CORE = ("Graph", "Node", "ancestors", "from_dlpack", "let")       # the graph core's public names
# NOTE: only these packages' names are public here; exprvm.core, exprvm.compiler and the
# other stage packages are reachable as attributes (Python sets them) but are not the API.
_PUBLIC_MODULES = ("nn", "random", "replay", "init", "schedules", "solvers", "distributed", "cuda", "train",
                   "data", "onnx")


def _public_names():
    """The names here that some exprvm package publishes in its own __all__, and the
    public modules. NOTE: read from sys.modules: `from . import render` would fetch the
    function ev.render that shadows the package of that name."""
    listed = set(_CORE)
    for name, module in list(_sys.modules.items()):
        if name.startswith(__name__ + ".") and name.count(".") == 1:
            listed.update(getattr(module, "__all__", ()))
    here = globals()
    names = {n for n in listed if n in here and not isinstance(here[n], _types.ModuleType)}
    names.update(n for n, v in here.items() if isinstance(v, _types.ModuleType) and n in _PUBLIC_MODULES)
    return sorted(names)


__all__ = _public_names()


def __dir__():
    # NOTE: dir() and tab completion list the API only, not the stage packages
    return list(__all__) + ["__version__"]
