"""A TapeMachine's device instructions replayed as one CUDA graph (device/graphs.py).

A device program is a fixed sequence of launches over buffers bound once, so the span
from its first to its last device instruction can be captured once (at the second run:
the first loads what the launches need) and replayed by every later run with a single
launch: the feeds are copied into their device buffers before it (to_device
instructions) and the results come back after it (to_host). The span must hold device
work only: a host instruction inside it (a host kernel, a loop the host drives, a
transfer, a parameter update) would have to run between two launches, which a replayed
graph cannot wait for.

    span(prog)    (first, last) instruction of the span, or (None, why not)
    Replay        the machine's steps with the span as one launch; captured again
                  whenever the machine rebinds a step inside it
"""
import warnings

from ..errors import KernelError, UsageError
from ..device import graphs

TRANSFERS = ("to_device", "to_host")


def _on_device(prog, ins):
    return (prog.registers[ins.out].device != "cpu" and ins.op not in TRANSFERS
            and ins.op != "update" and not ins.bodies and not ins.allocates)


def span(prog):
    """(first, last): the program's device instructions, from the first to the last,
    with nothing but device work between; or (None, the reason there is none)."""
    device = [k for k, ins in enumerate(prog.instrs) if _on_device(prog, ins)]
    if not device:
        return None, "the program has no device instruction"
    first, last = device[0], device[-1]
    for k in range(first, last + 1):
        ins = prog.instrs[k]
        if not _on_device(prog, ins):
            return None, (f"instruction {k} `{ins.text()}` runs on the host between the device "
                          f"instructions {first} and {last}")
    return (first, last), None


def choose(setting, prog, slow):
    """The span to capture for TapeMachine(cuda_graph=setting), or None. setting None
    (the default): whenever the program has one; True: it must have one (UsageError
    saying why not); False: never. slow: the machine watches every instruction."""
    if setting is False:
        return None
    if slow:
        found, why = None, "watch, nan_watch, inf_watch, trace and logger look at every instruction"
    else:
        found, why = span(prog)
        if found is not None and not graphs.supported():
            found, why = None, "the CUDA library loaded cannot capture graphs"
    if found is None and setting is True:
        raise UsageError(f"TapeMachine(cuda_graph=True): no CUDA graph can replay this program: {why}")
    return found


class Replay:
    """A machine's steps with its span (first..last) as one CUDA graph launch.

    base: the machine's step list (bound (fn, args) per instruction), which the machine
    may rebind in place (then it calls changed(k)); steps: what a run executes. The
    first run launches the span one by one, which loads every kernel and lets cuBLAS set
    itself up (nothing a capture could hold); the second captures it, and from then on
    runs replay it. strict: a capture that fails raises (the user asked for
    cuda_graph=True); else it warns once and the span runs launch by launch."""

    def __init__(self, base, first, last, strict):
        self.base, self.first, self.last, self.strict = base, first, last, strict
        self.graph = None
        self.warm = False
        self.failed = False
        self.launch_step = (_launch, (self,))
        self.steps = base[:first] + [self.launch_step] + base[last + 1:]

    def changed(self, k):
        """The machine rebound step k: a step of the span is captured again at the next run."""
        if self.first <= k <= self.last:
            self.drop()
        else:
            self.steps = self.base[:self.first] + [self.launch_step] + self.base[self.last + 1:]

    def drop(self):
        """Forget the captured graph (the next run captures again)."""
        if self.graph is not None:
            self.graph.free()
            self.graph = None

    def run_span(self):
        """The span's steps launch by launch (what the graph replays)."""
        for fn, args in self.base[self.first:self.last + 1]:
            fn(*args)


def _launch(rp):
    if rp.failed or not rp.warm:
        rp.run_span()
        rp.warm = True
        return
    if rp.graph is None:
        try:
            rp.graph = graphs.capture(rp.base[rp.first:rp.last + 1])
        except KernelError as e:
            if rp.strict:
                raise
            rp.failed = True
            warnings.warn(f"TapeMachine: its device instructions run one launch at a time: {e}",
                          RuntimeWarning, stacklevel=2)
            rp.run_span()
            return
    rp.graph.launch()
