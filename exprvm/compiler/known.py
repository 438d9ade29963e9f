"""Which programs have been fused before: the index that lets a tiered compile skip the
fusion analysis of a program whose kernels cannot be in the cache.

In: the IR the fusion pass sees (live Vals in topological order). Out: a fingerprint of
it, and whether a compile of that fingerprint once found every fused kernel built (this
process's memory, or one empty file per fingerprint under the kernel cache's
`programs/` folder, so that a second process knows it too).

The fusion pass's analysis (grouping, slice pushing, each group's C source and its hash)
is most of a small program's compile. A tiered compile that finds its fingerprint
unknown skips it: the program runs unfused at once and the background build does the
analysis with the kernels (tiers.py). A known fingerprint runs the analysis, whose
kernels are then looked up as before.

The fingerprint is a hint, never trusted for correctness: a fingerprint known while a
kernel is missing (a cache cleared by hand) only means an analysis whose kernels are then
built in the background, as before this index; one unknown while the kernels are all
there only means a fused program one background compile later. So it covers what
decides the kernels -- each Val's kind, op, shape, dtype, operands, simple params and
size-1 constants -- and reads nothing that is costly to write out (large constants'
values, loop bodies: a body's own compile has its own fingerprint).
"""
import hashlib
import os
import threading
from pathlib import Path

from ..kernels import generated

_lock = threading.Lock()
_known = set()          # fingerprints this process has seen fused: (cache root, fingerprint)


def fingerprint(live):
    """A hex digest of the IR `live` (see the module docstring for what it covers)."""
    pos = {}
    parts = []
    for i, v in enumerate(live):
        pos[id(v)] = i
        ins = [pos.get(id(x), -1) for x in v.ins]
        if v.params:
            text = repr(v.params)
            if "0x" in text:        # an object without a plain repr (a loop's body): its keys
                text = repr(sorted(v.params))
            parts.append((v.kind, v.op, v.shape, v.dtype.num, ins, text))
        elif v.kind == "const" and v.value is not None and v.value.size == 1:
            # NOTE: its value is written into a kernel's source
            parts.append((v.kind, v.shape, v.dtype.num, v.value.reshape(-1)[0].item()))
        else:
            parts.append((v.kind, v.op, v.shape, v.dtype.num, ins))
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def _path(root, fp):
    return os.path.join(root, "programs", fp)


def known(fp):
    """Has a compile of fingerprint fp found every fused kernel built (here or on disk)?"""
    root = str(generated.cache_root())
    if (root, fp) in _known:
        return True
    if os.path.exists(_path(root, fp)):
        with _lock:
            _known.add((root, fp))
        return True
    return False


def remember(fp):
    """Record that fingerprint fp's fused kernels are all built (an empty file, written
    atomically; a cache that cannot be written is only not told)."""
    root = str(generated.cache_root())
    with _lock:
        if (root, fp) in _known:
            return
        _known.add((root, fp))
    path = _path(root, fp)
    if os.path.exists(path):
        return
    try:
        generated.write_atomic(Path(path), b"")
    except OSError:
        pass

