"""Graph -> Program: choose what to compute, optimize, lower to registers and
instructions, plan the buffers, verify.

    prog = compile_graph(g, outputs=[cost], CompileOptions(backend="c"))
    print(prog)            # disassembly
    prog.verify()          # soundness proof of the buffer plan

What gets compiled: the `outputs` (default: every node of the graph) plus the
gradient nodes ev.grad made for any cost among them. Values that stay readable
after a run ("results"): the outputs given, or by default the graph's sinks,
its costs and its gradients; other intermediates share buffers and get no value.

The pipeline, each step linear in the graph's size:
  ir.build        a private copy of the graph; constants folded, exact identities
                  (x * 1, reshape to the same shape, ...) dropped
  ir.live_vals    dead code removed, topological order
  optimize        batching of per-step ops, merged sums, adds fused into kernels
  placement       which instructions run on a GPU (device= / use_cuda_for=)
  emit            registers, views taken once at bind time, kernels chosen per
                  instruction from the lowering table, transfers inserted
  plan            liveness, in-place, arena offsets; Program.verify checks it
  ir.release      the IR's cycles broken, so that it is freed at once
"""
import gc

import numpy as np

from ..core import ancestors
from ..errors import CompileError
from . import ir
from .backends import resolve_backend
from .emit import Emitter
from .optimize import optimize
from . import allreduce, control, fusion, hoist, threads, tiers
from .options import CompileOptions
from .placement import place
from .plan import plan
from .program import Instr, Program


def check_updates(g, updates):
    """The (state leaf, new value node) pairs of an updates= option, checked."""
    pairs = list(updates.items()) if isinstance(updates, dict) else list(updates)
    seen = set()
    for state, new in pairs:
        for n in (state, new):
            if getattr(n, "graph", None) is not g:
                raise CompileError(f"updates: {n!r} is not a node of graph {g.name!r}")
        if state.op != "param":
            raise CompileError(f"updates: {state.describe()} is not a parameter (a leaf with a value) "
                               "and cannot hold state")
        if (state.shape, state.dtype) != (new.shape, new.dtype):
            raise CompileError(f"updates: {state.describe()} cannot take the value of {new.describe()} "
                               "(shape or dtype differs)")
        if state.id in seen:
            raise CompileError(f"updates: {state.describe()} is updated twice")
        seen.add(state.id)
    return pairs


def emit_update(em, index, state, new):
    """The instruction writing `new` into state's own array, at the end of the tape (after
    every instruction that reads the state)."""
    src = em.on(index[new], "cpu")
    rid = index.get(state)
    if rid is None:                 # the state is not read by the program: its own register
        rid = em.reg(state.shape, state.dtype, "param").id
        em.regs[rid].nodes = [state]
        index[state] = rid
    em.instrs.append(Instr("update", (src,), rid, state, "numpy",
                           lambda ins, out, tmps: (np.copyto, (out, ins[0])), (), (), False, "update"))


def default_outputs(g):
    """What a machine given no outputs computes: the graph's sinks (op nodes nothing reads)
    and the costs ev.grad differentiated, once each, in graph order."""
    used = {x.id for n in g.nodes for x in n.inputs}
    found = {n.id: n for n in g.nodes if not n.is_leaf and n.id not in used}
    found.update((c.id, c) for c in g.costs.values())
    return [found[i] for i in sorted(found)]


def select(g, outputs, grads=True, keep=()):
    """(targets, results): nodes to compute and nodes whose values must survive the run."""
    if outputs is None:
        results = default_outputs(g)
        # NOTE: intermediates are computed as the results' ancestors, not as roots of their
        # own, so that what a fusion leaves unread is dropped as dead code.
        targets = list(results)
    else:
        results = list(outputs)
        targets = list(results)
    if grads and g.grads:
        present = {n.id for n in ancestors(targets)}
        extra = [gn for w, gn in g.grads.items() if g.costs[w].id in present]
        results += extra
        targets += extra
    results += list(keep)
    targets += list(keep)
    for n in targets:
        if getattr(n, "graph", None) is not g:
            raise CompileError(f"output {n!r} is not a node of graph {g.name!r}")
    return targets, list({n.id: n for n in results}.values())


def compile_graph(g, outputs=None, options=None, **changes):
    """Compile graph g to a Program (see the module docstring). `options` is a
    CompileOptions (keyword arguments change single fields of it). Allocates nothing and
    needs no GPU, device placement included (placement.py)."""
    options = (options or CompileOptions()).with_(**changes) if changes else (options or CompileOptions())
    # NOTE: compiling makes many small objects and no garbage cycles; pausing the cyclic
    # collector meanwhile saves its repeated scans (a quarter of the time on big graphs).
    paused = gc.isenabled()
    gc.disable()
    try:
        return compile_unpaused(g, outputs, options)
    finally:
        if paused:
            gc.enable()


def compile_unpaused(g, outputs, options):
    """compile_graph without pausing the garbage collector (a background build's compile:
    the collector is the whole process's). The tier (tiers.py): a program whose fused
    kernels are not built yet compiles unfused and gets an Upgrade."""
    with tiers.scope(options) as (scope, outermost):
        prog = _compile(g, outputs, options)
        if outermost:
            tiers.finish(scope, prog, g, options, _fusing(options, resolve_backend(options.backend)),
                         compile_unpaused)
        return prog


def _fusing(options, backend):
    """Does the compile run the fusion pass? Generated kernels run on the host only: none
    when values may go to a device."""
    return bool(options.optimize and backend == "c" and options.fuse and options.device in (None, "cpu")
                and not options.use_cuda_for and fusion.available()[0])


def _compile(g, outputs, options):
    backend = resolve_backend(options.backend)
    device, use_cuda_for = options.device, tuple(options.use_cuda_for or ())
    updates = check_updates(g, options.updates)
    targets, results = select(g, outputs, options.grads, tuple(options.keep) + tuple(n for _, n in updates))
    order = ancestors(targets, stop=options.inputs)
    vals = ir.build(order, identities=options.optimize, cuts=options.inputs)
    roots = [vals[n.id] for n in targets]
    live = control.merge_loops(ir.live_vals(roots))
    control.prune_loops(live)
    if options.optimize:
        live = hoist.hoist_scans(live, roots)
    notes = []
    if options.optimize:
        live, notes = optimize(live, roots, {id(vals[n.id]) for n in results}, fuse=_fusing(options, backend))
    control.compile_bodies(live, options, device, compile_graph)
    where = place(live, device, use_cuda_for)
    em = Emitter(backend, where)
    order = live               # live_vals keeps them in topological order
    if where.feeds:
        # NOTE: leaves first, then the feeds' transfers: a device step moves its inputs in
        # before its first instruction, however late the graph made them.
        for v in live:
            if v.kind != "op":
                em.val(v)
        for v in where.feeds:
            em.on(v.rid, "cuda")
        order = [v for v in live if v.kind == "op"]
    with threads.using(options.threads):    # a fused kernel's threads are chosen as it is lowered
        for v in order:
            em.val(v)
    fusion.annotate(live, em.instrs)
    index = {}
    for v in live:
        for n in v.nodes:
            index[n] = v.rid
    # constants folded away entirely: their values, for trace=True
    folded = [(n, v.value) for v in vals.values() if v.kind == "const"
              for n in v.nodes if not n.is_leaf and n not in index]
    # gradients of parameters on the device stay there (the device solvers update them)
    stays = {gn: em.regs[index[w]].device for w, gn in g.grads.items() if w in index and gn in index}
    out_values = [(n, em.on(index[n], stays.get(n, "cpu"))) for n in results if n in index]
    grad_regs = []
    taken = set()
    for w, gn in g.grads.items():
        if gn not in index or not any(gn is n for n in results):
            continue
        rid = em.on(index[gn], stays.get(gn, "cpu"))
        r = em.regs[rid]
        if r.kind != "buffer" or r.shape != w.shape or r.dtype != w.dtype or rid in taken:
            # .grad must be a writable array of w's shape that no other .grad shares.
            cp = em.reg(w.shape, w.dtype, "buffer", device=r.device)
            em.emit("copy", [rid], cp, {}, gn, note="")
            rid = cp.id
        taken.add(rid)
        grad_regs.append((w, rid))
    if options.comm is not None:
        grad_regs = allreduce.insert(em, grad_regs, options.comm)
    for state, new in updates:
        emit_update(em, index, state, new)
    externals = (control.externals(em, index, list(outputs), options.external if options.external is not True
                                   else ()) if options.external is not False else None)
    outs = sorted({rid for _, rid in out_values} | {rid for _, rid in grad_regs} | set(externals or ()))
    slots, bases, bound = plan(em.regs, em.instrs, outs)
    prog = Program(em.regs, em.instrs, slots, outs, bound, notes,
                   values=out_values, grads=grad_regs, index=index, bases=bases)
    if options.inputs or externals is not None:
        prog.inputs = [index.get(n) for n in options.inputs]
        prog.externals = externals
    prog.folded = folded
    threads.apply(prog, options.threads, wrap=options.external is False)
    ir.release(vals.values(), live)
    if options.verify:
        prog.verify()
    return prog
