"""Steady garbage collection for training loops: `with ev.steady_gc(): ...`.

A LispMachine loop builds a new graph every step. A graph and its nodes refer to each
other (node.graph, graph.nodes), so a dropped graph is freed by Python's cyclic
collector, not by reference counting; its objects live long enough (a step) to reach the
oldest generation, and a collection of that generation walks every object the process
holds -- the model, the programs of the replay cache, every module loaded. On the
adding problem that was one step in a hundred taking 20-30 times the median.

    with ev.steady_gc():                  # after the model is built
        for step in range(steps):
            ...

On entering the block, garbage is collected and everything alive is frozen
(gc.freeze: the cyclic collector no longer walks it). A collection inside the block
then walks only what was made since: the last steps' graphs. Inside the block the
oldest generation is collected as often as the middle one may be (its threshold set to
1, the others kept; restored on leaving): it holds only what survived since the
freeze, so each collection of it is small. Left at its default of one in ten, the
adding problem's collections of it took up to 50 ms each, one step in seventy or so:
more than 1% of the steps (measured with thread CPU time; with threshold 1: 8 ms at
most, one step in ten, the same total). The long-lived objects
made inside the block are frozen as they come: a program the replay cache compiles, and
the fused program a tier swaps in (settle(), called by the machines, asks for it; the
freeze happens at the end of the collector's next collection of its oldest generation,
which it makes anyway, when everything not yet frozen that is still alive is alive for
good reason and no garbage is frozen with it. A collection made at settle() itself
would fall on the step that compiled, tens of milliseconds on a 2-core machine.) Leaving the outermost block unfreezes everything
(gc.unfreeze), so that later collections see every object again and free what became
garbage meanwhile. The block's own entry asks for such a freeze too: what the first
steps make and keep (an optimizer's state, replay programs made before the block
swapping in) then leaves the generation the block's collections walk.

This is a choice of the code that opens the block: nothing else in exprvm changes the
collector's state, but for compile_graph pausing it while it compiles (gc.disable, and
enable again if it was enabled; a background build's compile does not pause it).

NOTE: a frozen object is freed only by reference counting while the block lasts: a
frozen structure that becomes cyclic garbage inside it (a program evicted from a full
replay cache, the graph of the step during which a program was compiled) waits for the
block's end. Nested blocks are one block; threads share it (the collector is the
process's).
"""
import contextlib
import gc
import threading

_lock = threading.Lock()
_open = [0]         # blocks open (nested ones, other threads' ones)


_pending = [False]  # settle() asked for a freeze after the next full collection
_saved = [None]     # the collector's thresholds before the outermost block


def _after_collection(phase, info):
    """gc.callbacks: at the end of a collection of the oldest generation inside a block,
    the freeze settle() asked for (what is alive then is no garbage)."""
    if phase == "stop" and info.get("generation") == 2 and _pending[0] and _open[0]:
        _pending[0] = False
        gc.freeze()


@contextlib.contextmanager
def steady_gc():
    """A block in which the cyclic collector walks only recent objects (see the module
    docstring). Returns nothing; use as a context manager."""
    with _lock:
        _open[0] += 1
        if _open[0] == 1:
            gc.collect()
            gc.freeze()
            _pending[0] = True
            gc.callbacks.append(_after_collection)
            _saved[0] = gc.get_threshold()
            young, middle = _saved[0][:2]
            gc.set_threshold(young, middle, 1)
    try:
        yield
    finally:
        with _lock:
            _open[0] -= 1
            if _open[0] == 0:
                gc.callbacks.remove(_after_collection)
                _pending[0] = False
                gc.set_threshold(*_saved[0])
                gc.unfreeze()


def settle():
    """Inside a steady_gc block: freeze what is alive (a program just compiled or swapped
    in, long-lived from now on) at the end of the next full collection. Outside: nothing."""
    if _open[0]:
        _pending[0] = True


def active():
    """Is a steady_gc block open?"""
    return _open[0] > 0
