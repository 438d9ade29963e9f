"""exprvm: expression graphs that compile to a bytecode tape (TapeMachine) or run node
by node with run-time autodiff (LispMachine).

This module is the public API only; the stages live in packages, in data-flow order:
core (graph, op record, grad) -> ops (op definitions) -> compiler (Graph -> Program)
-> machines (run it) -> kernels (numpy, C, CUDA); beside them train, nn and render.
See docs/guide/architecture.md.
"""
from .errors import (  # noqa: F401
    BackendError, CheckpointError, CompileError, DTypeError, ExprError, FeedError, GradCheckError,
    GradError, IndexRangeError, KernelError, NoValueError, NumericError, RunError, ShapeError,
    UnsupportedError)
from .core import Graph, Node, ancestors, grad, let  # noqa: F401
from .ops import *  # noqa: F401,F403
from .ops import OPS, Row, apply, defop, unbroadcast  # noqa: F401
from .ops import abs, max, min, pow, sum  # noqa: F401  (numpy's names shadow builtins on purpose)
from .ops import random, round  # noqa: F401  (ev.random.normal / uniform / bernoulli; numpy's round)
from .machines import LispMachine, TapeMachine, replay  # noqa: F401
from .train import check_grad, init, load, save, solvers  # noqa: F401
from .train import schedules  # noqa: F401  (learning-rate schedules for any solver's lr=)
from .render import render, to_dot  # noqa: F401
from . import nn  # noqa: F401
from . import distributed  # noqa: F401  (imports mpi4py only in ev.distributed.init())
from . import data  # noqa: F401  (ev.data.DataLoader, ArrayDataset, TextStreams)
from .kernels import backends, get_backend, set_backend  # noqa: F401
from . import cuda  # noqa: F401
from .cuda import tidy  # noqa: F401

__version__ = "0.1.0"
