"""Checkpoints: parameters plus optional extra sections in one .npz file.

    ev.save("model.npz", params, solver=opt.state_dict(), meta={"step": it})
    ck = ev.load("model.npz", params)           # copies values into params in place
    opt.load_state_dict(ck.section("solver"), params)
    it = int(ck.section("meta")["step"])

File layout: a plain .npz, readable with ``np.load(path, allow_pickle=False)``:

    "__exprvm_checkpoint__"   int64 scalar, the format version (1)
    "__sections__"            1-D str array: the section of entry i ("params", or
                              the keyword the extra dict was passed under)
    "__names__"               1-D str array: the name of entry i in its section
    "a0", "a1", ...           the array of entry i

Names are stored as data rather than as zip member names, so any non-empty
string is a valid name ("encoder.layer0/W" included) and no name can collide
with another, with numpy's ".npy" suffix, or with a directory in the archive.

Writes are atomic: the file goes to a temporary file in the same directory,
``.<basename>.<random>.tmp`` (hidden, beside ``path``), is flushed and fsynced,
then renamed over ``path`` with os.replace, so a crash mid-write leaves the
previous checkpoint intact. A writer holds an advisory lock (flock) on its temp
file; a save first removes the temps of the same target that no live writer
holds (those of saves that were killed), so they cannot pile up. ``path`` is
used exactly as given (no ".npz" is appended).

Loading never unpickles: a file holding Python objects is refused. Every member
must be a ``.npy`` array whose header fits the bytes it really holds, checked
before anything is allocated; what does not fit raises CheckpointError naming
the entry.
"""

import contextlib
import glob
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

try:
    import fcntl
except ImportError:     # no flock (Windows): stale temps are left for the user to remove
    fcntl = None

from ..errors import CheckpointError
from . import device

FORMAT_VERSION = 1
_MARK = "__exprvm_checkpoint__"
_PARAMS = "params"
# NOTE: mkstemp creates files as 0600; a checkpoint should be as readable as
# one np.save would write, or keep the mode of the file it replaces.
_NEW_FILE_MODE = 0o644


class Checkpoint(dict):
    """What load() read: a dict name -> array of the parameters, plus the extra sections."""

    def __init__(self, params, sections):
        super().__init__(params)
        self.sections = sections    # section name -> {name: array}

    def section(self, name):
        """The extra dict saved under ``name``; CheckpointError if the file has none."""
        if name not in self.sections:
            raise CheckpointError(
                f"checkpoint has no section {name!r} (it has {sorted(self.sections) or 'none'})")
        return self.sections[name]


def save(path, params, /, **sections):
    """Write ``params`` (and each extra dict in ``sections``) to ``path`` atomically.

    ``params`` is a list/tuple of objects with ``.name`` and ``.value``, or a
    dict name -> array (or name -> object with ``.value``). Each extra section
    is a dict str -> array-like (numbers and strings become 0-d arrays).
    """
    entries = [(_PARAMS, name, _array(name, value)) for name, value in _param_values(params)]
    for section, d in sections.items():
        if section == _PARAMS:
            raise CheckpointError(f"section name {_PARAMS!r} is reserved for the parameters")
        if not isinstance(d, Mapping):
            raise CheckpointError(f"section {section!r} must be a dict, got {type(d).__name__}")
        for name, value in d.items():
            _check_name(name, f"a key of section {section!r}")
            entries.append((section, name, _array(f"{section}:{name}", value)))
    arrays = {
        _MARK: np.array(FORMAT_VERSION, dtype=np.int64),
        "__sections__": np.array([e[0] for e in entries], dtype=str),
        "__names__": np.array([e[1] for e in entries], dtype=str),
    }
    for i, (_, _, arr) in enumerate(entries):
        arrays[f"a{i}"] = arr
    _atomic_write(os.fspath(path), arrays)


def load(path, params=None):
    """Read a checkpoint; with ``params``, also copy the values into them in place.

    Returns a Checkpoint: a dict name -> array of the saved parameters, with
    the extra dicts in ``.sections`` / ``.section(name)``. With ``params`` (as
    for save), every listed parameter must be in the file with the same shape
    and dtype; nothing is copied unless all of them fit. Parameters in the
    file that are not listed are ignored. A plain .npz written by np.savez
    loads too, each member as a parameter.
    """
    ckpt = _read(os.fspath(path))
    if params is not None:
        _copy_into(ckpt, params, path)
    return ckpt


# -- writing -----------------------------------------------------------------

def _param_values(params):
    """(name, value) pairs, checked for missing and duplicate names."""
    seen = set()
    out = []
    for name, obj in _pairs(params):
        if name in seen:
            raise CheckpointError(f"two parameters are named {name!r}")
        seen.add(name)
        value = obj if isinstance(obj, np.ndarray) else getattr(obj, "value", obj)
        value = device.fresh(value)     # a parameter a device machine holds: its device value
        if value is None:
            raise CheckpointError(f"parameter {name!r} has no value to save")
        out.append((name, value))
    return out


def _pairs(params):
    """(name, object) pairs from a list/tuple of named objects or a dict name -> object."""
    if isinstance(params, Mapping):
        pairs = list(params.items())
    elif isinstance(params, (list, tuple)):
        pairs = [(getattr(p, "name", None), p) for p in params]
    else:
        raise CheckpointError(
            f"params must be a list, tuple or dict, got {type(params).__name__}")
    for i, (name, obj) in enumerate(pairs):
        _check_name(name, f"parameter #{i} ({obj!r:.60})")
    return pairs


def _check_name(name, what):
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{what} has no name (need a non-empty string, got {name!r})")


def _array(name, value):
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise CheckpointError(
            f"{name!r} holds Python objects; checkpoints store numeric and string arrays only")
    return arr


def _temp_prefix(path):
    return f".{os.path.basename(path)}."


def _locked_temp(directory, path):
    """(fd, name) of a new temp file for path, locked by this writer."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=".tmp")
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        # NOTE: a cleaner may have taken the unlocked new file for a stale one and removed
        # it before our lock: then start again with a fresh one.
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_stale_temps(path):
    """Remove the temp files of earlier saves of path that no live writer holds (their
    writer was killed); returns their names. Without flock (Windows) it removes none."""
    if fcntl is None:
        return []
    directory = os.path.dirname(os.path.abspath(path))
    removed = []
    pattern = os.path.join(glob.escape(directory), glob.escape(_temp_prefix(path)) + "*.tmp")
    for name in glob.glob(pattern):
        try:
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:     # a live writer holds it
            os.close(fd)
            continue
        try:
            os.unlink(name)
            removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def atomic_write_text(path, text):
    """Replace the file at ``path`` by ``text`` as save() writes a checkpoint: a temporary
    file beside it, fsynced, renamed over it (a crash leaves the old file whole)."""
    _atomic_write(os.fspath(path), lambda f: f.write(text.encode("utf-8")), what="file")


def _atomic_write(path, arrays, what="checkpoint"):
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else _NEW_FILE_MODE
        remove_stale_temps(path)
        fd, tmp = _locked_temp(directory, path)
        with os.fdopen(fd, "wb") as f:
            if callable(arrays):
                arrays(f)
            else:
                np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointError(f"could not write {what} {path!r}: {e}") from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(directory)


def _fsync_dir(directory):
    # The rename is only durable once the directory entry is on disk. Some
    # platforms and filesystems cannot fsync a directory; the file itself is
    # complete by now, so that is not worth failing the save over.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading -----------------------------------------------------------------

# What a damaged or foreign file can make zipfile / numpy's .npy reader raise.
# NOTE: zipfile raises NotImplementedError (a RuntimeError) for a damaged compression
# method or version field, and RuntimeError for a flipped "encrypted" bit.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, RuntimeError, OverflowError, zipfile.BadZipFile,
                zlib.error)
_NPY_MAGIC = b"\x93NUMPY"
# NOTE: deflate cannot expand data more than ~1032 times; a member claiming more lies.
_MAX_RATIO = 1100


def _read(path):
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"no checkpoint at {path!r}") from e
    except _READ_ERRORS as e:
        if _starts_with(path, _NPY_MAGIC):
            raise CheckpointError(f"{path!r} is a single .npy array, not an .npz checkpoint") from e
        raise CheckpointError(f"{path!r} is not a readable checkpoint: {e}") from e
    try:
        with zf:
            members = _members(path, zf)
            if _MARK in members:
                return _read_sections(path, zf, members)
            return Checkpoint({key: _member(path, zf, info, f"entry {key!r}")
                               for key, info in members.items()}, {})
    except _READ_ERRORS as e:
        raise CheckpointError(f"{path!r} is corrupt or not a checkpoint: {e}") from e


def _starts_with(path, magic):
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _members(path, zf):
    """{key: ZipInfo} of an .npz's members ("W.npy" -> "W"); every member must be a .npy."""
    members = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path!r}: member {info.filename!r} is not a .npy array "
                                  "(a checkpoint holds only .npy members)")
        members[info.filename[:-4]] = info
    if not members:
        # NOTE: a zeroed end-of-archive record reads as an archive of no members
        raise CheckpointError(f"{path!r} holds no arrays: an empty or damaged archive")
    return members


def _member(path, zf, info, what):
    """The array of one .npy member, its header checked against the bytes it holds before
    anything is allocated."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"{path!r}: {what} is a .npy of unsupported version {version}")
        header = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{path!r}: {what} holds Python objects; loading it would need "
                              "allow_pickle=True, which checkpoints never use")
    count = 1
    for d in shape:
        count *= int(d)
    need = count * dtype.itemsize
    held = info.file_size - header
    if need != held:
        raise CheckpointError(f"{path!r}: {what} (member {info.filename!r}) claims shape {shape} "
                              f"{dtype} ({need} bytes), but holds {held} bytes")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_RATIO * info.compress_size + 4096:
        raise CheckpointError(f"{path!r}: {what} (member {info.filename!r}) claims {info.file_size} "
                              f"bytes from {info.compress_size} compressed")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_sections(path, zf, members):
    def member(key, what):
        if key not in members:
            raise CheckpointError(f"{path!r}: damaged checkpoint, no {what} (member {key}.npy)")
        return _member(path, zf, members[key], what)

    version = member(_MARK, "format version")
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise CheckpointError(f"{path!r}: unsupported checkpoint format {version!r}")
    sections, names = member("__sections__", "index of sections"), member("__names__", "index of names")
    if (sections.ndim != 1 or names.shape != sections.shape
            or sections.dtype.kind != "U" or names.dtype.kind != "U"):
        raise CheckpointError(f"{path!r}: damaged index of names")
    params = {}
    extra = {}
    for i, (section, name) in enumerate(zip(sections.tolist(), names.tolist())):
        target = params if section == _PARAMS else extra.setdefault(section, {})
        if name in target:
            raise CheckpointError(f"{path!r}: {name!r} appears twice in section {section!r}")
        target[name] = member(f"a{i}", f"entry {name!r} of section {section!r}")
    return Checkpoint(params, extra)


def _copy_into(ckpt, params, path):
    copies = []
    for name, obj in _pairs(params):
        target = obj if isinstance(obj, np.ndarray) else getattr(obj, "value", None)
        if not isinstance(target, np.ndarray) or not target.flags.writeable:
            raise CheckpointError(f"parameter {name!r} has no writable array value to load into")
        if name not in ckpt:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} has no parameter {name!r}")
        saved = ckpt[name]
        if saved.shape != target.shape or saved.dtype != target.dtype:
            raise CheckpointError(
                f"parameter {name!r}: checkpoint has {saved.shape} {saved.dtype}, "
                f"the parameter is {target.shape} {target.dtype}")
        copies.append((target, saved))
    for target, saved in copies:
        np.copyto(target, saved)
