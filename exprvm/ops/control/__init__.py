"""Structured control flow: loops and branches as single nodes holding traced bodies.

    carry, ys = ev.scan(step, init, xs, length=n)      # step(carry, x) -> (carry, y)
    out = ev.fori_loop(0, n, body, init)               # body(i, carry) -> carry
    out = ev.while_loop(cond_fn, body_fn, init, max_iterations=100)
    out = ev.cond(pred, true_fn, false_fn, *operands)  # only the taken branch runs

Each function is called once on placeholder nodes to build a body graph (core/body.py);
nodes of the enclosing graph it reads are captured. The loop is one node with several
results (op scan / while_loop / cond; its projections are op "result"), differentiable
by ev.grad and by the LispMachine, compiled by the TapeMachine into one instruction
holding a nested program. Given arrays and no nodes, these evaluate eagerly.
"""
from .loops import cond, fori_loop, while_loop  # noqa: F401
from .scans import scan  # noqa: F401
