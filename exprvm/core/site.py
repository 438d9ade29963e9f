"""The one creation-site probe: where the user's code stands when exprvm builds a node.

A site is kept raw, as (code object, bytecode offset) of the first stack frame
outside the exprvm package: turning it into file:line costs more than building
most nodes, and is done only when an error or a drawing shows it.
"""
import os
import sys

PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_getframe = sys._getframe      # NOTE: a module-level name: the probe runs once per node built

_BASENAMES = {}
_FORMATTED = {}        # (id(code), offset) -> (code, its file:line text)
# NOTE: file name -> is it exprvm's: a lookup costs half a startswith, and the probe asks
# once per frame for every node built. One entry per source file (and per name exec gives;
# cleared when full).
_INSIDE = {}


def caller(depth=1):
    """(code, offset) of the first stack frame outside the exprvm package, looking from
    `depth` frames above the caller's (the frames in between are known to be exprvm's),
    or (None, "<unknown>") when the stack ends inside exprvm.

    NOTE: one sys._getframe, then f_back: asking sys._getframe for each frame in turn
    walks the stack again from the top every time (quadratic in the depth: ev.nn builds
    its nodes five or six exprvm frames below the user's).
    """
    try:
        f = _getframe(depth + 1)
    except ValueError:          # the stack ended inside exprvm
        return None, "<unknown>"
    while True:
        code = f.f_code
        inside = _INSIDE.get(code.co_filename)
        if inside is None:
            inside = _inside(code.co_filename)
        if not inside:
            return code, f.f_lasti
        f = f.f_back
        if f is None:
            return None, "<unknown>"


def _inside(filename):
    """Is the source file exprvm's? (Remembered in _INSIDE.)"""
    if len(_INSIDE) >= 4096:    # names from exec'd code without end: bounded
        _INSIDE.clear()
    inside = _INSIDE[filename] = filename.startswith(PKG_DIR)
    return inside


def in_package(fn):
    """Is fn's code in the exprvm package (a function whose nodes take the site of the
    user's call that reached it)? False for callables without code of their own."""
    code = getattr(fn, "__code__", None)
    return code is not None and _inside(code.co_filename)


def _line(code, offset):
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def _format(code, offset):
    """file:line of (code, offset), remembered.

    NOTE: remembered because co_lines() walks the whole code object, and a graph built
    in one long function asks for the same few sites once per node (the compiler names
    them all). Keyed by the code object's id, with the object kept in the entry (so that
    its id stays its own): hash(code) hashes the bytecode and constants on every call,
    microseconds for a long function."""
    key = (id(code), offset)
    hit = _FORMATTED.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    if len(_FORMATTED) >= 4096:     # bounded: sites of exec'd code come and go
        _FORMATTED.clear()
    path = code.co_filename
    base = _BASENAMES.get(path)
    if base is None:
        base = _BASENAMES[path] = os.path.basename(path)
    text = f"{base}:{_line(code, offset)}"
    _FORMATTED[key] = (code, text)
    return text


def format_site(code, offset):
    """file:line of a site from caller(); with code None, offset is the site's text."""
    if code is None:
        return offset
    return _format(code, offset)


def user_site():
    """file:line of the first stack frame outside the exprvm package."""
    return format_site(*caller())
