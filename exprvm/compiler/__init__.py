"""The compiler: Graph -> Program.

In: a Graph and the nodes wanted from it. Out: a Program (plain data: registers,
instructions with their kernels chosen, a verified buffer plan, a disassembly),
which exprvm.machines.TapeMachine binds to arrays and runs. The user's graph is
never changed.
"""
from .options import CompileOptions  # noqa: F401
from .pipeline import check_updates, compile_graph, default_outputs, select  # noqa: F401
from .program import Instr, Program, Register  # noqa: F401
