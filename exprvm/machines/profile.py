"""Profiles: where a run's time goes.

    prof = m.profile(feeds, runs=20)          # a TapeMachine: per instruction
    print(prof)                               # sorted table: time, share, op, the user's line
    prof.rows[0].median_s, prof.by_op()       # the same as data
    ev.render(m.program, "prof.svg", profile=prof)   # the program coloured by time

    walk = lm.profile(feeds, runs=5)          # a LispMachine: per node kind, forward and backward

A TapeMachine profile runs the program `warmup` times untimed (binding, first feeds),
then `runs` times with every instruction timed (perf_counter around its prebound
call) and `runs` times whole, untimed inside; each instruction's figure is its median
over the runs (less the cost of reading the clock), and `run_s` is the median of a
whole run (feeds, copies and the loop included). A LispMachine profile walks the
graph (never replays) and times each node's forward evaluation and each VJP call of
the backward pass, summed per op per run.

NOTE: timings are of this machine at this moment: on a busy machine they say little.
"""
from dataclasses import dataclass
from statistics import median
from time import perf_counter

from ..errors import ExprError


def _runs(runs, warmup):
    if not isinstance(runs, int) or runs < 1:
        raise ExprError(f"profile: runs must be an int >= 1, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ExprError(f"profile: warmup must be an int >= 0, got {warmup!r}")


def _us(s):
    return f"{s * 1e6:10.1f}"


# -- the TapeMachine --------------------------------------------------------------------------

@dataclass(frozen=True)
class InstrTime:
    """One instruction's time: its median over the runs, and its share of their sum."""
    index: int          # position on the tape
    text: str           # the disassembly, "r5 = tanh[c] r4"
    op: str
    kernel: str         # "numpy", "c", "cuda"
    node: str           # the node it computes ("" for copies and transfers)
    site: str           # the user's line that built that node, or the compiler's note
                        # (a fused instruction: its member ops and their lines)
    median_s: float
    min_s: float
    share: float        # of the summed medians of all instructions


@dataclass(frozen=True)
class BodyInstrTime:
    """One instruction of a loop's or a branch's body: its time summed over the iterations
    of a run (median over the runs) and the iterations of a run (median)."""
    loop: str           # where the body is: "3" (the instruction at 3), "3/1" (its body 1
                        # -- a while loop's body, a cond's false branch), "3/0:2/0" nested
    index: int          # position on the body's tape
    text: str
    op: str
    node: str
    site: str
    median_s: float
    iterations: float

    @property
    def per_iteration_s(self):
        return self.median_s / self.iterations if self.iterations else 0.0


class TapeProfile:
    """Per-instruction times of a TapeMachine's program. Prints as a table sorted by time;
    the data is `rows` (in tape order), `body_rows` (the instructions of loop bodies),
    `total_s`, `run_s`, `tier` (the program's tier: compiler/tiers.py), `by_op()`,
    `records()`."""

    def __init__(self, program, rows, run_s, runs, body_rows=()):
        self.program = program
        self.tier = program.tier        # which tier ran (compiler/tiers.py)
        self.body_rows = list(body_rows)
        self.rows = rows
        self.total_s = sum(r.median_s for r in rows)
        self.run_s = run_s
        self.runs = runs

    def sorted(self):
        """The rows, slowest first."""
        return sorted(self.rows, key=lambda r: (-r.median_s, r.index))

    def by_op(self):
        """{op: (instructions, summed median seconds, share)}, slowest op first."""
        acc = {}
        for r in self.rows:
            n, s = acc.get(r.op, (0, 0.0))
            acc[r.op] = (n + 1, s + r.median_s)
        total = self.total_s or 1.0
        return {op: (n, s, s / total) for op, (n, s) in sorted(acc.items(), key=lambda kv: -kv[1][1])}

    def records(self):
        """The rows as plain dicts (for pandas, json, ...)."""
        return [dict(r.__dict__) for r in self.rows]

    def table(self, top=None):
        rows = self.sorted()[:top]
        width = max([len(r.text) for r in rows] + [11])
        lines = [f"profile: {len(self.rows)} instructions, median of {self.runs} runs; "
                 f"instructions {self.total_s * 1e6:.1f} us (summed), a whole run "
                 f"{self.run_s * 1e6:.1f} us (timed apart); tier: {self.tier}",
                 f"{'#':>4} {'time us':>10} {'share':>6} {'cum':>6}  {'instruction':<{width}}  line"]
        cum = 0.0
        for r in rows:
            cum += r.share
            where = f"{r.site} {r.node}".strip() if r.node and r.node not in r.site else r.site
            lines.append(f"{r.index:>4} {_us(r.median_s)} {r.share:6.1%} {cum:6.1%}  "
                         f"{r.text:<{width}}  {where}")
        if top is not None and top < len(self.rows):
            lines.append(f"  ... {len(self.rows) - top} more instructions")
        if self.body_rows:
            lines.append("loop bodies (time summed over the iterations of a run; per iteration):")
            for r in self.body_rows:
                lines.append(f"{r.loop:>6}:{r.index:<3} {_us(r.median_s)} x{r.iterations:<6g} "
                             f"{r.per_iteration_s * 1e6:8.2f} us  {r.text:<{width}}  {r.site}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return (f"<TapeProfile {len(self.rows)} instructions, {self.total_s * 1e6:.1f} us "
                f"(run {self.run_s * 1e6:.1f} us), {self.runs} runs>")

    # -- for ev.render(program, profile=...) --------------------------------------------------
    def check(self, program):
        if program is not self.program:
            raise ExprError("render: this profile was taken of another program; profile the "
                            "machine whose .program is drawn")

    def colour(self, k):
        """A fill from white (no time) to red (the slowest instruction)."""
        top = max(r.median_s for r in self.rows) or 1.0
        return f"0.000 {self.rows[k].median_s / top:.3f} 1.000"

    def note(self, k):
        r = self.rows[k]
        return f"{r.median_s * 1e6:.1f} us, {r.share:.1%}"

    def headline(self):
        return f"profile: {self.total_s * 1e6:.1f} us in instructions, median of {self.runs} runs"


def _timed(fn, k, acc):
    def call(*args):
        t = perf_counter()
        fn(*args)
        acc[k] = perf_counter() - t
    return call


def clock_overhead(n=2000):
    """What two back-to-back perf_counter calls measure: taken off every sample."""
    ts = []
    for _ in range(n):
        t = perf_counter()
        ts.append(perf_counter() - t)
    return median(ts)


def profile_tape(m, feeds=None, runs=10, warmup=1):
    """Profile TapeMachine m on feeds: see the module docstring. Returns a TapeProfile."""
    _runs(runs, warmup)
    for _ in range(warmup):
        m.run(feeds)
    prog = m.program
    # NOTE: the tier running now is the one profiled: a fused form whose background build
    # ends meanwhile is swapped in after the profile, not between its runs.
    held, prog.upgrade = prog.upgrade, None
    try:
        return _profile_tape(m, prog, feeds, runs)
    finally:
        prog.upgrade = held


def _profile_tape(m, prog, feeds, runs):
    n = len(prog.instrs)
    samples = [[] for _ in range(n)]
    for _ in range(runs):
        acc = [None] * n
        plain = m._steps
        wrapped = [(_timed(fn, k, acc), args) for k, (fn, args) in enumerate(plain)]
        mine = [w[0] for w in wrapped]
        m._steps = wrapped
        try:
            m.run(feeds)
        finally:
            # NOTE: a run may rebind steps (an input fed by reference, a rebound parameter):
            # keep what it put in, drop only the timing wrappers.
            if m._steps is wrapped:
                m._steps = [plain[k] if s[0] is mine[k] else s for k, s in enumerate(wrapped)]
        for k, t in enumerate(acc):
            if t is not None:
                samples[k].append(t)
    bodies = _bound_bodies(m._steps)
    body_samples = {key: ([[] for _ in body.prog.instrs], []) for key, body in bodies}
    for _ in range(runs):
        for _, body in bodies:
            body.timing, body.iterations = [0.0] * len(body.prog.instrs), 0
        try:
            m.run(feeds)
        finally:
            for key, body in bodies:
                times, its = body_samples[key]
                for j, t in enumerate(body.timing):
                    times[j].append(t)
                its.append(body.iterations)
                body.timing = None
    whole = []
    for _ in range(runs):
        t = perf_counter()
        m.run(feeds)
        whole.append(perf_counter() - t)
    zero = clock_overhead()
    body_rows = []
    for key, body in bodies:
        times, its = body_samples[key]
        n_it = median(its)
        for j, ins in enumerate(body.prog.instrs):
            node = ins.node
            t = max(median(times[j]) - zero * n_it, 0.0)
            body_rows.append(BodyInstrTime(
                loop=key, index=j, text=ins.text(), op=ins.op, node=node.label if node is not None else "",
                site=str(node.site) if node is not None else (ins.note or ""), median_s=t, iterations=n_it))
    samples = [[max(t - zero, 0.0) for t in s] for s in samples]
    med = [median(s) if s else 0.0 for s in samples]
    total = sum(med) or 1.0
    rows = []
    for k, ins in enumerate(prog.instrs):
        node = ins.node
        site = str(node.site) if node is not None else (ins.note or "")
        if ins.op == "fused" and ins.note:
            # NOTE: a fused instruction's note lists its member ops and their lines (as the
            # disassembly shows it); the node it computes, when it has one, is only the last.
            site = ins.note
        rows.append(InstrTime(
            index=k, text=ins.text(), op=ins.op, kernel=ins.kernel,
            node=node.label if node is not None else "", site=site,
            median_s=med[k], min_s=min(samples[k]) if samples[k] else 0.0, share=med[k] / total))
    return TapeProfile(prog, rows, median(whole), runs, body_rows)


def _bound_bodies(steps):
    """(path, BoundBody) of every loop body bound in a machine's steps, nested ones too."""
    out = []

    def visit(prefix, body):
        out.append((prefix, body))
        for (k, b), inner in sorted(body.inner.items()):
            visit(f"{prefix}:{k}/{b}", inner)
    for k, (fn, _) in enumerate(steps):
        for b, body in enumerate(getattr(fn, "bound", ())):
            visit(f"{k}/{b}", body)
    return out

# -- the LispMachine --------------------------------------------------------------------------


@dataclass(frozen=True)
class OpTime:
    """One op's time in a walk: nodes of that op, and the median per run of their summed
    forward evaluations and backward VJP calls."""
    op: str
    nodes: int
    forward_s: float
    backward_s: float
    share: float        # of the walk's summed forward and backward time

    @property
    def total_s(self):
        return self.forward_s + self.backward_s


class WalkProfile:
    """Per-op times of a LispMachine walk. Prints as a table sorted by time; the data is
    `rows`, `forward_s`, `backward_s`, `run_s`, `records()`."""

    def __init__(self, rows, run_s, runs):
        self.rows = sorted(rows, key=lambda r: (-r.total_s, r.op))
        self.forward_s = sum(r.forward_s for r in rows)
        self.backward_s = sum(r.backward_s for r in rows)
        self.run_s = run_s
        self.runs = runs

    def records(self):
        return [dict(r.__dict__, total_s=r.total_s) for r in self.rows]

    def table(self):
        nodes = sum(r.nodes for r in self.rows)
        lines = [f"walk profile: {nodes} nodes, median of {self.runs} walks; forward "
                 f"{self.forward_s * 1e6:.1f} us, backward {self.backward_s * 1e6:.1f} us, whole run "
                 f"{self.run_s * 1e6:.1f} us",
                 f"{'op':<16} {'nodes':>5} {'forward us':>11} {'backward us':>12} {'share':>6}"]
        for r in self.rows:
            lines.append(f"{r.op:<16} {r.nodes:>5} {r.forward_s * 1e6:11.1f} {r.backward_s * 1e6:12.1f} "
                         f"{r.share:6.1%}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return (f"<WalkProfile {len(self.rows)} ops, forward {self.forward_s * 1e6:.1f} us, "
                f"backward {self.backward_s * 1e6:.1f} us, {self.runs} walks>")


class _Clock:
    """What the LispMachine calls per timed node: (node, "forward" | "backward", seconds)."""

    def __init__(self):
        self.times, self.calls = {}, {}

    def __call__(self, node, phase, seconds):
        key = (node.op, phase)
        self.times[key] = self.times.get(key, 0.0) + seconds
        self.calls[key] = self.calls.get(key, 0) + 1


def profile_walk(m, feeds=None, runs=5, warmup=1):
    """Profile LispMachine m's walk on feeds: see the module docstring. Returns a WalkProfile."""
    _runs(runs, warmup)
    saved = m.replay
    m.replay = False
    m._cached_for = -1          # re-plan without the replay key
    per_run, calls, whole = [], [], []
    try:
        for _ in range(warmup):
            m.run(feeds)
        for _ in range(runs):
            clock = _Clock()
            m._clock = clock
            t = perf_counter()
            try:
                m.run(feeds)
            finally:
                m._clock = None
            whole.append(perf_counter() - t)
            per_run.append(clock.times)
            calls.append(clock.calls)
    finally:
        m.replay = saved
        m._cached_for = -1
    counts = {}
    for n in m._order:
        if n.opdef is not None:
            counts[n.op] = counts.get(n.op, 0) + 1
    zero = clock_overhead()
    for times, count in zip(per_run, calls):
        for key, n in count.items():
            times[key] = max(times[key] - n * zero, 0.0)
    keys = {op for times in per_run for op, _ in times}
    med = {(op, ph): median(t.get((op, ph), 0.0) for t in per_run)
           for op in keys for ph in ("forward", "backward")}
    total = sum(med.values()) or 1.0
    rows = [OpTime(op, counts.get(op, 0), med[op, "forward"], med[op, "backward"],
                   (med[op, "forward"] + med[op, "backward"]) / total) for op in keys]
    return WalkProfile(rows, median(whole), runs)
