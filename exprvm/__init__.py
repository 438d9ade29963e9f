"""exprvm: expression graphs that compile to a bytecode tape (TapeMachine) or run
node by node with run-time autodiff (LispMachine)."""
from .errors import (  # noqa: F401
    BackendError, CheckpointError, CompileError, DTypeError, ExprError, FeedError, GradCheckError,
    GradError, IndexRangeError, KernelError, NumericError, RunError, ShapeError)
from .graph import Graph, Node, ancestors, let, toposort  # noqa: F401
from .ops import *  # noqa: F401,F403
from .ops import OPS, Row, apply, defop, unbroadcast  # noqa: F401
from .ops import abs, max, min, pow, sum  # noqa: F401  (numpy's names shadow builtins on purpose)
from .grad import grad  # noqa: F401
from .lisp import LispMachine  # noqa: F401
from . import replay  # noqa: F401
from .tape import TapeMachine  # noqa: F401
from .check import check_grad  # noqa: F401
from . import init, solvers  # noqa: F401
from .checkpoint import load, save  # noqa: F401
from .render import render, to_dot  # noqa: F401
from . import nn  # noqa: F401
from .kernels import backends, get_backend, set_backend  # noqa: F401
from . import cuda  # noqa: F401
from .cuda import tidy  # noqa: F401

__version__ = "0.1.0"
