"""The machines every cross-checking test runs on. Each evaluator takes a graph,
the nodes wanted and the feeds, runs a machine and returns the nodes' values."""
import numpy as np

import exprvm as ev


def lisp_eval(g, outputs, feeds=None):
    m = ev.LispMachine(g, outputs=outputs)
    m.run(feeds or {})
    return [np.array(o.value, copy=True) for o in outputs]


def tape_eval(g, outputs, feeds=None):
    m = ev.TapeMachine(g, outputs=outputs)   # verifies its program when it compiles
    m.run(feeds or {})
    return [np.array(o.value, copy=True) for o in outputs]


EVALUATORS = {"lisp": lisp_eval, "tape": tape_eval}
