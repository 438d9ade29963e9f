"""A TapeMachine's slow run: every instruction logged (logger=), checked for NaN / Inf
(nan_watch=, inf_watch=) or its value kept on its node (trace=True)."""
import numpy as np

from ..errors import NumericError
from .common import check_finite, log, run_error


def plan_trace(m):
    """Where each value goes after its instruction (trace=True keeps every one on its node)."""
    prog, arrays = m.program, m._arrays
    after = {k: [] for k in range(len(prog.instrs))}
    producer = {ins.out: k for k, ins in enumerate(prog.instrs)}
    m._trace_start = list(prog.folded)
    for n, rid in prog.index.items():
        if n.is_leaf:       # a leaf's value is its own (an input's: what ev.let bound)
            continue
        root = prog.root(rid).id
        if root in producer:
            after[producer[root]].append((n, arrays[rid]))
        else:
            m._trace_start.append((n, arrays[rid]))
    m._trace_after = [after[k] for k in range(len(prog.instrs))]


def run_watched(m):
    """A run one instruction at a time: logged, NaN/Inf-checked, traced."""
    prog, arrays, logger = m.program, m._arrays, m.logger
    for n, v in m._bad_folds:
        check_finite(v, f"{n.label} = {n.op}(...) made at {n.site} (constant, folded when compiled)",
                     m.nan_watch, m.inf_watch)
    if m.trace:
        for n, a in m._trace_start:
            n.value = np.array(a, copy=True)
    for k, (fn, args) in enumerate(m._steps):
        ins = prog.instrs[k]
        try:
            fn(*args)
        except Exception as e:
            raise run_error(e, m._where(k)) from e
        if logger is not None:
            log(logger, f"{ins.text()}  ; {ins.comment()} -> {prog.registers[ins.out].shape}")
        if m.nan_watch or m.inf_watch:
            try:
                check_finite(_host(arrays[ins.out]), m._where(k), m.nan_watch, m.inf_watch)
            except NumericError as e:
                raise NumericError(str(e)) from None
        if m.trace:
            for n, a in m._trace_after[k]:
                n.value = np.array(_host(a), copy=True)


def _host(a):
    return a if isinstance(a, np.ndarray) else a.numpy()
