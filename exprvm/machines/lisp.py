"""LispMachine: evaluates the graph node by node, then reverse-mode autodiff at run time.

No compile step: the graph may grow between runs (variable-length unrolls).
The backward pass calls the same VJP rules as ev.grad, on arrays.

A graph whose structure the machine has met before (a new graph per batch, built the
same way) is replayed instead of walked: see replay.py.

run(feeds) returns the outputs' values (copies the caller owns; borrow=True: the arrays on
the nodes). A feed is for one run: every input the run reads is fed, unless ev.let bound
it; the walk puts the feed on the input's .value and the run puts back what was there
(ev.let's binding, or None). Runs of one machine are serialized by a lock (the walk keeps
its values on the graph's nodes).
"""
import threading
from time import perf_counter

import numpy as np

from ..core import ancestors, bound_value, check_cost, check_value, depends_on, let, owner_of
from ..core.grad import check_seed, gather_result
from ..compiler import check_updates, default_outputs
from ..errors import ExprError, FeedError
from . import replay as _replay
from .common import check_feed_graph, check_finite, check_graph_arg, log, node_list, node_site, run_error, unfed
from .results import returned
from .logfmt import formatter
from .profile import profile_walk


class LispMachine:
    """Walks a graph node by node, then differentiates it at run time.

    Parameters
    ----------
    g : Graph
        The graph to walk; it may grow between runs.
    cost : Node, optional
        Scalar node to differentiate: ``run()`` sets ``.grad`` on every leaf it depends on.
    fwd_only, bwd_only : bool
        Run only the forward walk, or only the backward pass.
    nan_watch, inf_watch : bool
        Raise NumericError naming the first node (or gradient) with a NaN / Inf and the
        line that built it.
    watch : list of Node
        Nodes whose values are recorded after every run in ``.history``.
    logger : logging.Logger or callable, optional
        Told every node evaluated and every gradient the backward pass adds.
    outputs : Node or iterable of Node, optional
        What ``run()`` returns, in order (default: ``[cost]``, or without a cost the
        graph's sinks).
    replay : bool, default True
        Run a compiled program for a structure walked often enough before (see
        replay.py): values then land on the cost, the outputs and the leaves'
        gradients only.
    comm : ev.distributed Context, optional
        After every run (walked or replayed) each parameter's ``.grad`` is averaged over
        the ranks (bucketed all-reduce).
    replay_cache : ReplayCache, optional
        The cache holding those programs (default: ``replay.DEFAULT``, shared by the
        process's LispMachines, safe across threads).
    updates : dict
        ``{state parameter: new value node}``: after every run each new value is written
        into the state's own ``.value`` array (batch norm's running statistics).
    seed : array or Node, optional
        The gradient flowing into the cost (an array of its shape, or a node whose value
        is read each run): with a seed the cost may be non-scalar, and ``run(seed=)``
        overrides it for one run; a seeded run is always walked.
    value_fmt : str or callable, optional
        How the logger shows values: None (no values), a format spec for each element
        (``".3f"``), or a callable array -> str (see logfmt.py).
    """

    def __init__(self, g, cost=None, fwd_only=False, bwd_only=False, nan_watch=False,
                 inf_watch=False, watch=(), logger=None, outputs=None, replay=True, comm=None,
                 replay_cache=None, updates=(), seed=None, value_fmt=None):
        check_graph_arg(g, "LispMachine", "cost=")
        if fwd_only and bwd_only:
            raise ExprError("LispMachine: fwd_only and bwd_only exclude each other")
        if cost is not None and seed is None:
            check_cost(cost, "LispMachine")
        elif cost is not None:
            check_seed(cost, seed, "LispMachine")
        elif seed is not None:
            raise ExprError("LispMachine: seed= needs a cost")
        elif bwd_only:
            raise ExprError("LispMachine: bwd_only needs a cost")
        self.graph = g
        self.cost = cost
        self.updates = check_updates(g, updates)
        outputs = None if outputs is None else node_list(outputs, "LispMachine", "outputs")
        # what run() returns
        self.outputs = (outputs if outputs is not None else [cost] if cost is not None
                        else [n for n in default_outputs(g) if n.role != "grad"])
        # what the walk (or the replayed program) computes besides the cost
        self._wanted = outputs
        if self.updates:     # the new values are computed (walked or replayed) as outputs
            self._wanted = (self._wanted or []) + [n for _, n in self.updates]
        self._lock = threading.Lock()
        self.fwd_only, self.bwd_only = fwd_only, bwd_only
        self.nan_watch, self.inf_watch = nan_watch, inf_watch
        self.history = {n: [] for n in watch}
        self.logger = logger
        self.seed = seed
        self._fmt = formatter(value_fmt)
        self._clock = None              # set by profile(): told every node's time
        # NOTE: watching, logging and half passes want the node-by-node walk itself.
        self.replay = bool(replay and cost is not None and seed is None
                           and not (fwd_only or bwd_only or nan_watch or inf_watch or watch or logger))
        self.replay_cache = _replay.DEFAULT if replay_cache is None else replay_cache
        self._cached_for = -1
        self.comm = comm

    # Re-plan only when the graph has grown since the last run. The replay key is all a
    # replayed run needs; the walk's order is worked out only when a walk needs it.
    def _plan(self):
        if self._cached_for == len(self.graph.nodes):
            return
        self._cached_for = len(self.graph.nodes)
        self._order = None
        sig = self.graph.signature() if self.replay and self.cost is not None else None
        self._key = None if sig is None else _replay.Key((sig, self.cost.id,
                                                         tuple(o.id for o in self._wanted or ())))

    def _plan_walk(self):
        if self._order is not None:
            return
        if self.cost is None and self._wanted is None:
            targets = list(self.graph.nodes)
        else:
            targets = ([self.cost] if self.cost is not None else []) + (self._wanted or [])
        self._order = ancestors(targets)
        self._inputs = [n for n in self._order if n.op == "input"]
        self._leaves = [n for n in self._order if n.is_leaf and n.op != "const" and n.dtype.kind == "f"]
        self._diff = depends_on(self._order, self._leaves) if self.cost is not None else set()

    def _compile(self):
        self._plan_walk()
        reached = {n.id for n in ancestors([self.cost])}    # not what only the outputs read
        wrt = [n for n in self._leaves if n.id in self._diff and n.id in reached]
        return _replay.CompiledStructure(self.graph, self._order, self.cost, self._wanted or [], wrt)

    def _replayed(self, feeds):
        """Run the compiled program of this graph's structure; False if there is none yet."""
        prog = self.replay_cache.program_for(self._key, self._compile)
        if prog is None:
            return False
        g = self.graph
        _check_fed([g.nodes[i] for i, _ in prog.inputs if g.nodes[i].op == "input"], feeds)
        if self.cost.value is not None:
            # this graph ran before: values a walk left on intermediate nodes would be stale
            for n in g.nodes:
                if n.opdef is not None:
                    n.value = None
        prog.run(g)
        if self.comm is not None:
            ids = {i for i, _ in prog.params}
            self.comm.allreduce_grads([g.nodes[i] for i, _ in prog.grads if i in ids])
        _give_owners(g.nodes[i] for i, _ in prog.grads)
        return True

    def run(self, feeds=None, seed=None, *, borrow=False):
        """Walk (or replay) the graph once, then differentiate ``cost`` (when given).

        Parameters
        ----------
        feeds : dict, optional
            ``{input node: array}`` for this run only: every input the run reads must be
            fed, unless ``ev.let`` bound it (a feed overrides the binding for its run).
            A parameter fed is bound from then on (as ``ev.let``).
        seed : array or Node, optional
            The gradient flowing into the cost for this run only (see the class's ``seed``).
        borrow : bool, default False
            Return the arrays on the nodes (read-only views) instead of copies.

        Returns
        -------
        list of ndarray
            The outputs' values in ``outputs`` order (``[cost]`` by default), arrays the
            caller owns.

        Raises
        ------
        FeedError
            For a feed of the wrong shape or dtype, an input left unfed, or a node of
            another graph; the machine stays usable.
        NumericError
            Under ``nan_watch`` / ``inf_watch``, naming the node and its line.

        Notes
        -----
        Values land on the nodes (``node.value``) and gradients on the leaves the cost
        depends on (``leaf.grad``) and on the ev.nn parameters behind them; a replayed
        run sets them on the cost, the outputs and the leaves only. The walk puts a feed
        on its input's ``.value`` and the run puts back what was there. Runs of one
        machine take turns (a lock).
        """
        with self._lock:
            bound = []                      # (input, its value before this run's feed)
            try:
                for node, value in (feeds or {}).items():
                    check_feed_graph(node, self.graph, "LispMachine.run")
                    if node.op == "input":  # for this run only
                        checked = check_value(node, value)
                        bound.append((node, node.value))
                        node.value = checked
                    else:
                        let(node, value)    # a parameter: its value from now on
                self._run(seed, feeds or {})
                return [None if n.value is None else returned(n.value, borrow) for n in self.outputs]
            finally:
                for node, old in bound:
                    node.value = old

    def _run(self, seed, feeds):
        self._plan()
        self._seed = self.seed if seed is None else seed
        if self._seed is None and self._key is not None and self._replayed(feeds):
            self._apply_updates()
            return
        self._plan_walk()
        _check_fed(self._inputs, feeds)
        if not self.bwd_only:
            self._forward()
        if self.cost is not None and not self.fwd_only:
            self._backward()
            if self.comm is not None:
                self.comm.allreduce_grads([n for n in self._leaves if n.op == "param" and n.id in self._diff])
            _give_owners(n for n in self._leaves if n.grad is not None and n.id in self._diff)
        self._apply_updates()
        for n, values in self.history.items():
            values.append(None if n.value is None else np.array(n.value, copy=True))

    def _apply_updates(self):
        for state, new in self.updates:
            if new.value is None:       # bwd_only: nothing was computed
                continue
            value = state.value
            if not (type(value) is np.ndarray and value.flags.writeable):
                raise FeedError(f"updates: state {state.label} (made at {state.site}) must hold a "
                                "writable array to be updated in place")
            np.copyto(value, new.value)

    def _forward(self):
        watch = self.nan_watch or self.inf_watch
        logger, fmt, clock = self.logger, self._fmt, self._clock
        ndarray = np.ndarray
        # loops the backward pass will differentiate record their steps (run-time autodiff)
        record = self._diff if self.cost is not None and not self.fwd_only else ()
        self._tapes = {}
        for n in self._order:
            opdef = n.opdef
            if opdef is None:           # a leaf
                v = n.value
                if type(v) is not ndarray or v.shape != n.shape or v.dtype != n.dtype:
                    check_value(n, bound_value(n))  # FeedError naming the leaf, as on the tape
                continue
            if clock is not None:
                t = perf_counter()
            try:
                if opdef.record is not None and n.id in record:     # a loop: keep its steps
                    v, self._tapes[n.id] = opdef.record(*[x.value for x in n.inputs], **n.params)
                else:
                    v = (opdef.eager or opdef.impl)(*[x.value for x in n.inputs], **n.params)
            except Exception as e:
                raise run_error(e, node_site(n)) from e
            if clock is not None:
                clock(n, "forward", perf_counter() - t)
            n.value = v if type(v) is ndarray or opdef.multiple_results else np.asarray(v)
            if logger is not None:      # NOTE: formatting the line costs more than most ops
                log(logger, f"{n.label} = {n.op}({', '.join(x.label for x in n.inputs)}) -> {n.shape}"
                    + ("" if fmt is None else f" = {fmt(n.value)}"))
            if watch:
                check_finite(n.value, f"{n.label} = {n.op}(...) made at {n.site}",
                             self.nan_watch, self.inf_watch)

    def _backward(self):
        cost, diff, watch = self.cost, self._diff, self.nan_watch or self.inf_watch
        logger, fmt, clock = self.logger, self._fmt, self._clock
        adj = {cost.id: self._seed_value()}
        if logger is not None:
            log(logger, f"backward from {cost.label}: d{cost.label} = "
                        f"{'1' if self._seed is None else 'seed'} -> {cost.shape}"
                        + ("" if fmt is None else f" = {fmt(adj[cost.id])}"))
        parts = {}          # a loop's id -> {result index: gradient}, from its projections
        for n in reversed(self._order):
            if n.opdef is not None and n.opdef.multiple_results:
                self._backprop_loop(n, parts.pop(n.id, None), adj, diff)
                continue
            gn = adj.pop(n.id, None)
            if gn is None:
                continue
            opdef = n.opdef
            if opdef is None:       # a leaf keeps its gradient for the end
                if n.op != "const":
                    adj[n.id] = gn
                continue
            if n.op == "result":    # one result of a loop: gathered for the loop's backprop
                gather_result(parts, n, gn)
                continue
            xs = [x.value for x in n.inputs]
            for i, x in enumerate(n.inputs):
                if x.id not in diff or not opdef.has_vjp(i):
                    continue
                if clock is not None:
                    t = perf_counter()
                gi = opdef.input_vjp(i, gn, n.value, xs, n.params)
                if clock is not None:
                    clock(n, "backward", perf_counter() - t)
                if gi is None:
                    continue
                if logger is not None:
                    log(logger, f"d{x.label} += vjp of {n.label} = {n.op}(...) wrt input {i} "
                                f"-> {np.shape(gi)}" + ("" if fmt is None else f" = {fmt(gi)}"))
                if watch:
                    check_finite(np.asarray(gi), f"gradient of {x.label} through {n.op} made at {n.site}",
                                 self.nan_watch, self.inf_watch)
                prev = adj.get(x.id)
                adj[x.id] = gi if prev is None else prev + gi
        for leaf in self._leaves:
            gv = adj.get(leaf.id)
            if gv is None:
                if leaf.id not in diff:
                    continue
                gv = np.zeros(leaf.shape, leaf.dtype)
            # NOTE: VJPs may return broadcast (read-only) views; .grad must be a plain array.
            leaf.grad = np.array(np.broadcast_to(gv, leaf.shape), dtype=leaf.dtype, copy=True)
            if logger is not None:
                log(logger, f"{leaf.label}.grad -> {leaf.shape}" + ("" if fmt is None else f" = {fmt(leaf.grad)}"))

    def _backprop_loop(self, n, got, adj, diff):
        """A loop's run-time VJP over the steps its forward walk recorded."""
        if got is None:
            return
        gs = [got.get(k) for k in range(len(n.params["results"]))]
        gis = n.opdef.backprop(self._tapes.pop(n.id), gs, n.value, *[x.value for x in n.inputs], **n.params)
        for x, gi in zip(n.inputs, gis):
            if gi is not None and x.id in diff and x.dtype.kind == "f":
                prev = adj.get(x.id)
                adj[x.id] = gi if prev is None else prev + gi

    def _seed_value(self):
        """The gradient flowing into the cost this run: 1, or the seed (checked)."""
        cost, seed = self.cost, self._seed
        if seed is None:
            if cost.shape != ():
                check_cost(cost, "LispMachine.run")     # a non-scalar cost needs a seed
            return np.ones((), dtype=cost.dtype)
        if hasattr(seed, "graph"):      # a node: its value this run
            check_seed(cost, seed, "LispMachine")
            seed = bound_value(seed) if seed.is_leaf else seed.value
            if seed is None:
                raise ExprError("LispMachine: the seed node has no value; add it to outputs")
        check_seed(cost, seed, "LispMachine")
        return np.asarray(seed, dtype=cost.dtype)

    def __repr__(self):
        what = f"cost={self.cost.label}" if self.cost is not None else f"{len(self.outputs)} outputs"
        mode = "fwd_only" if self.fwd_only else "bwd_only" if self.bwd_only else (
            "replay" if self.replay else "walk")
        return f"<LispMachine on {self.graph.name!r} ({len(self.graph)} nodes), {what}, {mode}>"

    def profile(self, feeds=None, runs=5, warmup=1):
        """Time a walk per node kind (forward evaluations and backward VJP calls, summed per
        op, median over `runs` walks; never replayed): a WalkProfile, which prints as a
        table sorted by time and holds the data."""
        return profile_walk(self, feeds, runs, warmup)


def _give_owners(leaves):
    """Hand each leaf's new gradient to its owner (an ev.nn Param: see core/owners.py)."""
    for leaf in leaves:
        o = owner_of(leaf)
        if o is not None:
            o.take_grad(leaf.grad)


def _check_fed(inputs, feeds):
    """FeedError naming the inputs a run reads that it was not fed and ev.let did not bind."""
    missing = [n for n in inputs if n not in feeds and n.value is None]
    if missing:
        raise FeedError(unfed(missing, "LispMachine.run"))
