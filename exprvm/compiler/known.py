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
decides the kernels -- each Val's kind, op, shape, dtype, operands, params (but a
view's) and size-1 constants -- and reads nothing that is costly to write out (large
constants' values, loop bodies: a body's own compile has its own fingerprint).
"""
import os
import threading
import zlib
from pathlib import Path

from ..kernels import generated

_lock = threading.Lock()
_known = set()          # fingerprints this process has seen fused: (cache root, fingerprint)
_CODES = {}             # op or kind name -> its crc32
VIEWS = frozenset(("getitem", "unpack", "reshape", "transpose", "broadcast_to"))


def _code(name):
    """A stable int for an op's name (str hashes differ between processes)."""
    code = _CODES.get(name)
    if code is None:
        code = _CODES[name] = zlib.crc32(str(name).encode())
    return code


def fingerprint(live):
    """A hex fingerprint of the IR `live` (see the module docstring for what it covers).

    NOTE: built of ints and tuples of them, whose hash() is the same in every process
    (a str's is not): a compile pays about a microsecond per Val for it. A view's params
    (a slice's bounds, a reshape's shape) are left out: they decide no kernel's source."""
    pos = {}                # Val -> its position (keyed by the Val itself: no id() call)
    at = pos.get
    parts = []
    for i, v in enumerate(live):
        pos[v] = i
        op = v.op if v.kind == "op" else v.kind
        code = _CODES.get(op)
        if code is None:
            code = _code(op)
        # NOTE: one and two operands spelt out: a comprehension is a call of its own per Val
        xs = v.ins
        n = len(xs)
        if n == 2:
            ins = (at(xs[0], -1), at(xs[1], -1))
        elif n == 1:
            ins = (at(xs[0], -1),)
        else:
            ins = tuple([at(x, -1) for x in xs])
        if v.params and op not in VIEWS:
            text = repr(v.params)
            if "0x" in text:        # an object without a plain repr (a loop's body): its keys
                text = repr(sorted(v.params))
            parts.append((code, v.shape, v.dtype.num, ins, zlib.crc32(text.encode())))
        elif v.kind == "const" and v.value is not None and v.value.size == 1:
            # NOTE: its value is written into a kernel's source
            parts.append((code, v.shape, v.dtype.num, v.value.reshape(-1)[0].item()))
        else:
            parts.append((code, v.shape, v.dtype.num, ins))
    return f"{hash(tuple(parts)) & 0xFFFFFFFFFFFFFFFF:016x}"


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

