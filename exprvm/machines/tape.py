"""TapeMachine: compiles a graph once into a Program and runs it many times.

    m = ev.TapeMachine(g, outputs=cost)   # a node or any iterable of nodes
    loss, = m.run({x: batch})             # the outputs, as arrays the caller owns
    print(m.program)                      # the tape

Binding (once, and again only if a parameter's `.value` is rebound to a new
array): every buffer, view and kernel argument is resolved to a real array and
each instruction becomes a prebound (fn, args) pair. A steady run is: copy feeds
into the inputs' buffers (a large input read by few instructions is read in
place instead), one identity check per leaf, then `fn(*args)` per instruction --
no lookups, no shape checks, no allocation (bar the kernels lowering.py lists
as allocating).

Parameters are read in place: a solver that updates `.value` in place is seen
by the next run. A parameter whose `.value` is rebound to a new array is
noticed (identity check) and from then on copied into a private buffer per run.

What a run hands out (results.py): run() returns copies of the outputs (borrow=True:
read-only views of the buffers, overwritten by the next run); node.value of the
results and wrt.grad of the gradients are the machine's result buffers, which a later
run never writes while anyone else holds them. Every input must be fed in each run,
unless ev.let bound it (then its bound value is read every run); a feed never changes
the input's .value.

Runs of one machine are serialized by a lock: threads may share a machine, each getting
its own run's outputs from run().
"""
import threading

import numpy as np

from ..compiler import CompileOptions, compile_graph, default_outputs
from ..compiler.placement import require_cuda
from ..core import OPS, check_value, let
from ..errors import ExprError, FeedError, UsageError
from ..device.params import DeviceParams
from .common import check_feed_graph, check_graph_arg, node_list, run_error, unfed
from .leaves import BoundParam, FedInput
from .loops import bind_loop
from .profile import profile_tape
from .watched import plan_trace, run_watched
from .results import hand_out, hand_out_other, held, make_results, plan_results, returned
from . import cuda_graph, steady


class TapeMachine:
    """Compiles a graph once into a Program (a tape of instructions) and runs it.

    See the module docstring for how a run works.

    Parameters
    ----------
    g : Graph
        The graph to compile.
    outputs : Node or iterable of Node, optional
        What ``run()`` returns, in order (default: the graph's sinks and costs; the
        gradients ``ev.grad`` made for a cost compiled are computed too and land on
        ``.grad``).
    grads : bool, default True
        Also compile the ``ev.grad`` gradients of the costs compiled.
    backend : {"numpy", "c", None}
        Kernel backend for ops that have compiled kernels (None: the current one).
    watch : list of Node
        Nodes whose values are recorded after every run in ``.history``.
    nan_watch, inf_watch : bool
        Raise NumericError at the first NaN / Inf an instruction makes.
    trace : bool
        Keep a copy of every intermediate value on its node (compiles without the
        graph optimizations, so that every node keeps a register).
    logger : logging.Logger or callable, optional
        Told every instruction executed.
    verify : bool, default True
        Check the buffer plan with ``Program.verify``.
    optimize : bool, default True
        Fusions, batching of per-step ops and merged gradient sums.
    device : {None, "cuda"}
        Run the instructions that have device kernels on a CUDA GPU (placement.py).
    use_cuda_for : tuple of str
        Run only these ops on the GPU.
    comm : ev.distributed Context, optional
        The tape averages every gradient over the ranks (bucketed MPI all-reduce
        instructions; compiler/allreduce.py).
    updates : dict
        ``{state parameter: new value node}``: at the end of every run each new value
        is written into the state's own ``.value`` array (shown as ``update``
        instructions in the disassembly; batch norm's running statistics).
    fuse : {True, "tiered", "sync", False}, default True
        Each group of elementwise ops as one generated C kernel (off under trace,
        nan_watch and inf_watch: those see every value). True / "tiered": a program
        whose kernels are not in the disk cache runs unfused at once and swaps in its
        fused form between two runs once a background build made it
        (``m.program.tier`` says which runs; compiler/tiers.py); "sync": wait for the C
        compiler; False: no generated kernels.
    threads : None, int or Policy
        Thread policy: None (chosen from the shapes), an int cap, or a Policy
        (compiler/threads.py).
    cuda_graph : {None, True, False}
        With ``device="cuda"``: replay the device instructions as one CUDA graph,
        captured at the second run (machines/cuda_graph.py; ``m.cuda_graph`` says which
        instructions). None (default): whenever nothing runs on the host between the
        first and the last device instruction; True: that must hold (UsageError
        otherwise); False: launch by launch.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> g = ev.Graph()
    >>> x = g.vector("x", 3)
    >>> y = ev.sum(x * 2.0)
    >>> m = ev.TapeMachine(g, outputs=y)
    >>> m.run({x: np.ones(3)})
    [array(6.)]
    >>> float(y.value)
    6.0
    """

    def __init__(self, g, outputs=None, *, grads=True, backend=None, watch=(), nan_watch=False,
                 inf_watch=False, trace=False, logger=None, verify=True, optimize=True,
                 device=None, use_cuda_for=(), comm=None, updates=(), fuse=True, threads=None,
                 cuda_graph=None):
        check_graph_arg(g, "TapeMachine", "outputs=")
        self.graph = g
        if outputs is not None:
            outputs = node_list(outputs, "TapeMachine", "outputs")
        # what run() returns; by default the sinks and costs (gradients land on .grad)
        self.outputs = outputs if outputs is not None else [n for n in default_outputs(g) if n.role != "grad"]
        self.watch = node_list(watch, "TapeMachine", "watch")
        self.nan_watch, self.inf_watch, self.trace, self.logger = nan_watch, inf_watch, trace, logger
        # NOTE: trace wants every node's value, so nothing may be fused or batched away;
        # the watches check every value an instruction makes, so no add is fused away.
        self.options = CompileOptions(grads=grads, keep=tuple(self.watch), backend=backend,
                                      optimize=optimize and not trace, verify=verify, device=device,
                                      use_cuda_for=tuple(use_cuda_for or ()),
                                      comm=comm,
                                      fuse=False if (nan_watch or inf_watch) else fuse, threads=threads,
                                      updates=_pairs(updates))
        self.program = compile_graph(g, outputs, self.options)
        self._cuda = None
        self._device_bufs = {}
        if any(r.device != "cpu" for r in self.program.registers):
            self._cuda = require_cuda()
        self.history = {n: [] for n in self.watch}
        self._slow = bool(nan_watch or inf_watch or trace or logger is not None)
        # NOTE: a NaN a constant fold made (log(-1) of constants) is made by no instruction:
        # the watches check those values too, naming the node that made them.
        self._bad_folds = [(n, v) for n, v in self.program.folded_constants()
                           if (nan_watch and np.isnan(v).any()) or (inf_watch and np.isinf(v).any())]
        self._resident = DeviceParams() if self._cuda is not None else None
        if cuda_graph not in (None, True, False):
            raise UsageError(f"TapeMachine: cuda_graph must be None, True or False, got {cuda_graph!r}")
        self._cuda_graph = cuda_graph
        self._replay = None
        self._leaves()
        self._closed = False
        # NOTE: one run at a time: a run writes the machine's buffers from its first
        # instruction to its hand-out (threads sharing a machine take turns).
        self._lock = threading.Lock()
        self._bind()

    def _leaves(self):
        """The program's inputs and parameters, and fresh arenas (binding follows)."""
        self._arenas = {}
        self._inputs = []
        self._params = []
        self._device_params = []    # [node, register, DeviceArray, host value]: on the device
        for r in self.program.registers:
            if r.kind == "input":
                self._inputs.append(FedInput(r.nodes[0], r.id, self.program))
            elif r.kind == "param" and r.device != "cpu":
                self._device_params.append([r.nodes[0], r.id, None, None])
            elif r.kind == "param":
                self._params.append(BoundParam(r.nodes[0], r.id))
        self._leaf = {i.node: i for i in self._inputs}
        self._mine, self._other = plan_results(self.program)

    def _upgrade(self):
        """Swap in the program's fused form once its background build is done (tiered
        compilation, compiler/tiers.py): between two runs, with the same results."""
        new = self.program.upgraded()
        if new is not None:
            self.program = new
            self._leaves()
            self._bind()
            steady.settle()         # long-lived from now on: frozen in a steady_gc block

    @staticmethod
    def compile(g, outputs=None, **options):
        """The Program a TapeMachine would run, without binding it: allocates nothing and
        needs no GPU (device placement can be inspected anywhere). Keyword arguments are
        CompileOptions fields (grads, keep, backend, optimize, verify, device, ...)."""
        return compile_graph(g, outputs, CompileOptions(**options))

    # -- binding -----------------------------------------------------------------
    def _bind(self):
        prog = self.program
        regs = prog.registers
        arrays = [None] * len(regs)
        for i in self._inputs:
            arrays[i.rid] = i.cur
        for p in self._params:
            arrays[p.rid] = p.bind()
        for dp in self._device_params:
            arrays[dp[1]] = dp[2] = self._resident.bind(dp[0])
            dp[3] = dp[0].value
        shared = {}
        for r in regs:
            if r.id in self._mine:
                # a result owns its memory (see results.py): a fresh array at every bind
                arrays[r.id] = np.empty(r.shape, r.dtype)
            elif r.kind == "buffer" and r.device != "cpu":
                arrays[r.id] = self._device_buffer(r)
            elif r.kind == "buffer":
                # NOTE: registers at the same bytes share one array object: numpy checks
                # distinct objects over the same memory for overlap on every call.
                key, lo, hi = prog.memory(r)
                same = (key, lo, r.shape, r.dtype.str)
                a = shared.get(same)
                if a is None:
                    a = shared[same] = self._arena(key)[lo:hi].view(r.dtype).reshape(r.shape)
                arrays[r.id] = a
            elif r.kind == "const" and r.device != "cpu":
                arrays[r.id] = self._resident.constant(r.id, r.const)
            elif r.kind == "const":
                arrays[r.id] = r.const
            elif r.kind == "view" and r.device != "cpu":
                op, params = r.view
                arrays[r.id] = arrays[r.base].apply_view(lambda a: OPS[op].impl(a, **params))
            elif r.kind == "view":
                base = arrays[r.base]
                a = OPS[r.view[0]].impl(base, **r.view[1])
                if a.size and not np.shares_memory(a, base):
                    raise ExprError(f"r{r.id}: {r.view[0]} copied instead of viewing r{r.base}")
                arrays[r.id] = a
        self._arrays = arrays
        self._steps = [self._build_step(k) for k in range(len(prog.instrs))]
        self._results = make_results(prog, arrays, self._mine)
        self._out_regs = [self._register_of(n) for n in self.outputs]
        # NOTE: the common case (every output a host array in a register) copied in one loop
        self._host_outs = all(type(r) is int and type(arrays[r]) is np.ndarray for r in self._out_regs)
        self._watched = [(n, self._register_of(n)) for n in self.watch]
        self._bound = [p for p in self._params if p.buf is None]
        self._copied = [p for p in self._params if p.buf is not None]
        self._plan_replay()
        if self.trace:
            plan_trace(self)

    def _plan_replay(self):
        """The steps' CUDA graph (cuda_graph.py), captured afresh at the next run."""
        if self._replay is not None:
            self._replay.drop()
        if self._cuda is None:
            if self._cuda_graph is True:
                raise UsageError("TapeMachine(cuda_graph=True): the program runs nothing on a CUDA device")
            self._replay = None
            return
        found = cuda_graph.choose(self._cuda_graph, self.program, self._slow)
        self._replay = None if found is None else cuda_graph.Replay(self._steps, *found,
                                                                    strict=self._cuda_graph is True)

    @property
    def cuda_graph(self):
        """(first, last): the instructions each run replays as one CUDA graph, or None."""
        rp = self._replay
        return None if rp is None else (rp.first, rp.last)

    @staticmethod
    def _bind_instr(ins, arrays):
        """(fn, args) of one instruction over the machine's arrays."""
        ins_arrays, tmps = [arrays[i] for i in ins.ins], [arrays[t] for t in ins.tmps]
        if ins.bodies:      # a loop or a branch: its nested programs (machines/loops.py)
            fn, args = bind_loop(ins, ins_arrays, arrays[ins.out], tmps)
            return ins.after_bind(fn, args) if ins.after_bind is not None else (fn, args)
        return ins.bind(arrays)

    def _build_step(self, k):
        ins, arrays = self.program.instrs[k], self._arrays
        if ins.op == "update":
            return _update, (ins.node, arrays[ins.ins[0]])
        return self._bind_instr(ins, arrays)

    def _register_of(self, node):
        """The register holding node's value after a run (an output, a watched node)."""
        rid = self.program.index.get(node)
        if rid is not None:
            return rid
        folded = [v for n, v in self.program.folded if n is node]
        if folded:          # a constant no instruction needs: a register of its own
            return folded[0]
        raise ExprError(f"TapeMachine: {node.describe()} has no register in the program")

    def _rebind_register(self, rid, array, views, steps):
        """Point register rid (and its views and the instructions touching them) at another
        array: cheap for the few instructions one register has."""
        prog, arrays = self.program, self._arrays
        arrays[rid] = array
        for v in views:
            r = prog.registers[v]
            arrays[v] = OPS[r.view[0]].impl(arrays[r.base], **r.view[1])
        for k in steps:
            self._steps[k] = self._build_step(k)
            if self._replay is not None:
                self._replay.changed(k)
        if self.trace:
            plan_trace(self)

    def _device_buffer(self, r):
        # NOTE: registers share a device slot only with equal shape and dtype (plan._color).
        buf = self._device_bufs.get(r.slot)
        if buf is None:
            buf = self._device_bufs[r.slot] = self._cuda.DeviceArray(r.shape, r.dtype, scoped=False)
        return buf

    def _arena(self, key):
        a = self._arenas.get(key)
        if a is None:
            p = self.program
            size = p.arenas[key] if p.bases is not None else p.slots[key[1]]
            a = self._arenas[key] = _arena(size)
        return a

    # -- running -----------------------------------------------------------------
    def run(self, feeds=None, *, borrow=False):
        """Execute the program once on feeds ({input node: array}; every input the program
        reads must be fed, unless ev.let bound it). Returns the outputs' values, a list in
        `outputs` order: copies the caller owns, or with borrow=True read-only views of the
        machine's buffers (overwritten by the next run). Values land on node.value and
        gradients on wrt.grad too (see results.py for how long they stay put)."""
        with self._lock:
            if self._closed:
                raise ExprError("this TapeMachine is closed")
            if self.program.upgrade is not None:
                self._upgrade()
            fed = self._feed(feeds) if feeds else 0
            if fed != len(self._inputs):
                self._feed_bound(feeds or {})
            for p in self._bound:
                if p.node.value is not p.seen:
                    self._rebind()
                    break
            for p in self._copied:
                p.refresh()
            for dp in self._device_params:
                if dp[0].value is not dp[3]:    # .value assigned: upload it (rebind if it moved)
                    dp[3] = dp[0].value
                    if self._resident.bind(dp[0]) is not dp[2]:
                        self._bind()
                        break
            for res in held(self._results):     # someone kept last run's array: leave it to them
                res.set_array(np.empty_like(res.arr))
                self._rebind_register(res.rid, res.arr, res.views, res.steps)
            if self._slow:
                run_watched(self)
            else:
                steps, rp = self._steps, self._replay
                if rp is not None and rp.base is steps:     # (a profile times the plain steps)
                    steps = rp.steps
                args = None
                try:
                    for fn, args in steps:
                        fn(*args)
                except Exception as e:
                    if rp is not None and args is rp.launch_step[1]:
                        raise run_error(e, f"the CUDA graph of instructions {rp.first}-{rp.last}") from e
                    k = next((k for k, s in enumerate(self._steps) if s[1] is args), 0)
                    raise run_error(e, self._where(k)) from e
            return self._hand_out(borrow)

    def _hand_out(self, borrow):
        arrays = self._arrays
        hand_out(self._results)
        if self._other:
            hand_out_other(self._other, arrays)
        for n, rid in self._watched:
            self.history[n].append(np.array(_host(arrays[rid] if type(rid) is int else rid), copy=True))
        if self._host_outs and not borrow:
            return [arrays[r].copy() for r in self._out_regs]
        return [returned(arrays[r] if type(r) is int else r, borrow) for r in self._out_regs]

    def _feed(self, feeds):
        """Feed every value; the number of the program's inputs among them."""
        leaf, ndarray = self._leaf, np.ndarray
        fed = 0
        for node, value in feeds.items():
            i = leaf.get(node)
            if i is None:
                check_feed_graph(node, self.graph, "TapeMachine.run")
                if node.op == "input":      # an input this program does not read: checked only
                    check_value(node, value)
                else:
                    let(node, value)        # a parameter: its value from now on
                continue
            fed += 1
            # NOTE: the common case inline (an array of the input's exact dtype and shape
            # copied into its buffer): a call less per input; feeding many small inputs
            # cost more than running them.
            if (type(value) is ndarray and value.dtype is i.dtype and value.shape == i.shape
                    and not i.byref and i.cur is i.buf):
                i.buf[...] = value
            else:
                i.feed(value, self)
        return fed

    def _feed_bound(self, feeds):
        """The inputs not in feeds: their ev.let-bound values, or a FeedError naming them."""
        missing = [i for i in self._inputs if i.node not in feeds and i.node.value is None]
        if missing:
            raise FeedError(unfed([i.node for i in missing], "TapeMachine.run"))
        for i in self._inputs:
            if i.node not in feeds:
                i.feed(i.node.value, self)

    def _rebind_input(self, inp, array):
        """Point an input (and its views and readers) at another array: cheap for the few
        instructions an input-by-reference has."""
        inp.cur = array
        self._rebind_register(inp.rid, array, inp.views, inp.steps)

    def _private(self, array):
        """Is array free of the machine's own buffers (safe to read while they are written)?"""
        return not (any(np.may_share_memory(array, a) for a in self._arenas.values())
                    or any(np.may_share_memory(array, i.buf) for i in self._inputs)
                    or any(np.may_share_memory(array, r.arr) for r in self._results))

    def _rebind(self):
        # NOTE: a parameter rebound once is likely rebound every step: copy it from now on
        # instead of rebinding the whole tape each run.
        for p in self._bound:
            if p.node.value is not p.seen:
                p.buf = np.empty(p.node.shape, p.node.dtype)
        self._bind()

    def _where(self, k):
        ins = self.program.instrs[k]
        node = ins.node
        what = f"{node.label} (made at {node.site})" if node is not None else ins.note or "a temporary"
        return f"{what}, instruction {k} `{ins.text()}`"

    def profile(self, feeds=None, runs=10, warmup=1):
        """Time every instruction over `runs` runs on feeds: a TapeProfile, which prints as
        a table sorted by time (median, share, op, the user's line) and holds the data;
        ev.render(m.program, path, profile=it) colours the program by time."""
        return profile_tape(self, feeds, runs, warmup)

    # -- resources ---------------------------------------------------------------
    def close(self):
        """Drop the machine's buffers (device buffers too); the machine cannot run afterwards."""
        if self._replay is not None:
            self._replay.drop()
            self._replay = None
        self._steps = []
        self._arrays = []
        self._arenas = {}
        for buf in self._device_bufs.values():
            buf.free()
        self._device_bufs = {}
        if self._resident is not None:
            self._resident.close()      # the parameters' values back in their host arrays
        self._results = []
        self._closed = True

    def params_to_host(self):
        """Copy the device parameters' values into their host arrays (ev.nn blocks, a host
        machine sampling from the same model, a checkpoint of the host arrays)."""
        if self._resident is not None:
            self._resident.to_host()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        outs = ", ".join(n.label for n in self.outputs[:4]) + (", ..." if len(self.outputs) > 4 else "")
        kernels = ", ".join(f"{k} {v}" for k, v in sorted(self.program.kernels().items()))
        return (f"<TapeMachine on {self.graph.name!r} ({len(self.graph)} nodes): {len(self.program)} "
                f"instructions ({kernels}), outputs [{outs}], {len(self._inputs)} inputs, "
                f"{len(self.program.grads)} gradients, {self.program.peak_bytes} B planned"
                + (", closed>" if self._closed else ">"))


def _pairs(updates):
    return tuple(updates.items()) if isinstance(updates, dict) else tuple(updates or ())


def _update(node, new):
    """An update instruction: new written into the state parameter's own .value (whatever
    array it holds now, even when the machine reads a private copy of it)."""
    value = node.value
    if not (type(value) is np.ndarray and value.shape == node.shape and value.dtype == node.dtype
            and value.flags.writeable):
        raise FeedError(f"updates: state {node.label} (made at {node.site}) must hold a writable "
                        f"{node.dtype.name} array of shape {node.shape} to be updated in place")
    np.copyto(value, new)


def _host(a):
    return a if isinstance(a, np.ndarray) else a.numpy()


def _arena(nbytes):
    """nbytes of uint8 starting on a 64-byte boundary (cache lines; vector loads in kernels)."""
    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes]

