"""The machines that run graphs: TapeMachine (a compiled Program) and LispMachine
(node by node, with run-time autodiff and replay of structures met before).

In: a Graph (and feeds per run). Out: the outputs' values (run()'s list), values on the
nodes, gradients on .grad.
"""
from .lisp import LispMachine  # noqa: F401
from .tape import TapeMachine  # noqa: F401
from . import replay  # noqa: F401
from .steady import steady_gc  # noqa: F401

__all__ = ["LispMachine", "TapeMachine", "replay", "steady_gc"]
