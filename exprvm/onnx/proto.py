"""Reading ONNX protobuf messages as untrusted input: the model bytes, tensors and
attributes, each checked before anything of the size it declares is allocated.

A tensor's declared element count is checked against the bytes it holds (raw_data, a
typed field, or a slice of an external-data file inside the model's folder) and against
a limit; an attribute must have the kind the operator's row expects. Every refusal is an
OnnxError naming the tensor or the attribute. The `onnx` package is imported here only
when a function needs it, so `import exprvm` does not need it.
"""
import importlib
import os

import numpy as np

from ..errors import OnnxError, OnnxUnsupportedError

# ONNX TensorProto.DataType -> numpy dtype, for the types exprvm nodes can hold
DTYPES = {1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
          5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_),
          11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64)}
ONNX_TYPES = {dt: code for code, dt in DTYPES.items()}
# the typed field each data type's values sit in when there is no raw_data
_FIELDS = {1: "float_data", 11: "double_data", 7: "int64_data", 12: "uint64_data", 13: "uint64_data"}

MAX_ELEMENTS = 2 ** 31   # the default limit on any one tensor or value (8 GiB of float32)


def onnx_module():
    """The onnx package, or an OnnxError saying how to install it."""
    try:
        return importlib.import_module("onnx")
    except ImportError:
        raise OnnxError("ONNX import and export need the onnx package: pip install 'exprvm[onnx]'") from None


def type_name(code):
    """ONNX's name of a data type code (FLOAT16, ...)."""
    try:
        return onnx_module().TensorProto.DataType.Name(int(code))
    except ValueError:
        return f"type code {int(code)}"


def numpy_dtype(code, what):
    """The numpy dtype of an ONNX data type code, or OnnxUnsupportedError naming it."""
    dt = DTYPES.get(int(code))
    if dt is None:
        raise OnnxUnsupportedError(f"{what}: ONNX data type {type_name(code)} is not supported "
                                   "(float32, float64, integers and bool are)")
    return dt


def parse_model(source):
    """(ModelProto, folder for external data or None) from a path, bytes or a ModelProto."""
    onnx = onnx_module()
    if isinstance(source, onnx.ModelProto):
        return source, None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, folder = bytes(source), None
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise OnnxError(f"cannot read ONNX model {path!r}: {e.strerror or e}") from None
        folder = os.path.dirname(os.path.abspath(path))
    else:
        raise OnnxError(f"ev.onnx.load takes a path, bytes or an onnx.ModelProto, got {type(source).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:   # NOTE: protobuf raises DecodeError, or RuntimeWarning-like errors
        raise OnnxError(f"not a valid ONNX model (truncated or corrupt file): {e}") from None
    if not model.HasField("graph"):
        raise OnnxError("not a valid ONNX model: it has no graph (truncated or corrupt file)")
    return model, folder


def shape_count(dims, what, limit):
    """The element count of dims, refusing negative dims and counts over limit."""
    dims = [int(d) for d in dims]
    if any(d < 0 for d in dims):
        raise OnnxError(f"{what}: negative dimension in shape {tuple(dims)}")
    count = 1
    for d in dims:
        count *= d
    if count > limit:
        raise OnnxError(f"{what}: shape {tuple(dims)} has {count} elements, over the limit of {limit} "
                        "(ev.onnx.load(..., max_elements=) raises it)")
    return tuple(dims), count


def read_tensor(t, folder, limit, what=None):
    """A TensorProto as a numpy array, its declared size checked against its bytes first."""
    name = what or f"tensor {t.name!r}"
    dt = numpy_dtype(t.data_type, name)
    if t.HasField("segment"):
        raise OnnxUnsupportedError(f"{name}: segmented tensors are not supported")
    dims, count = shape_count(t.dims, name, limit)
    nbytes = count * dt.itemsize
    if t.data_location == 1:
        raw = _external(t, folder, nbytes, name)
    elif t.HasField("raw_data"):
        raw = t.raw_data
    else:
        return _typed(t, dt, dims, count, name)
    if len(raw) != nbytes:
        raise OnnxError(f"{name}: declares shape {dims} of {dt.name} ({nbytes} bytes) but holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt).reshape(dims)


def _typed(t, dt, dims, count, name):
    field = getattr(t, _FIELDS.get(t.data_type, "int32_data"))
    if len(field) != count:
        raise OnnxError(f"{name}: declares shape {dims} ({count} elements) but holds {len(field)} values")
    # NOTE: small integer types sit widened in int32_data; a corrupt value wraps, never raises
    wide = np.uint64 if dt.kind == "u" and dt.itemsize >= 4 else np.int64 if dt.kind in "iub" else dt
    return np.array(field, dtype=wide).astype(dt).reshape(dims)


def _external(t, folder, nbytes, name):
    """The bytes of an external-data tensor: a file inside the model's folder, read at the
    offset and length it declares, all checked before reading."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if not loc:
        raise OnnxError(f"{name}: external data without a location")
    if folder is None:
        raise OnnxError(f"{name}: external data {loc!r} needs the model loaded from a path (its folder)")
    if os.path.isabs(loc) or os.path.normpath(loc).split(os.sep)[0] == os.pardir:
        raise OnnxError(f"{name}: external data {loc!r} lies outside the model's folder")
    base = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(base, loc))
    if os.path.commonpath([base, path]) != base:
        raise OnnxError(f"{name}: external data {loc!r} lies outside the model's folder (a link leads out)")
    if not os.path.isfile(path):
        raise OnnxError(f"{name}: external data file {loc!r} does not exist")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise OnnxError(f"{name}: external data offset/length are not integers: {info}") from None
    size = os.path.getsize(path)
    if length is None:
        length = size - offset
    if offset < 0 or length != nbytes or offset + length > size:
        raise OnnxError(f"{name}: external data {loc!r} at offset {offset}, length {length}, does not hold "
                        f"the {nbytes} bytes the tensor declares (the file has {size})")
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# -- attributes ---------------------------------------------------------------------------
# kinds an import row declares, and the AttributeProto.type each one accepts ("g": a
# subgraph, a loop's body or a branch, which checks.py plans as it plans the model)
KINDS = {"i": 2, "f": 1, "s": 3, "t": 4, "g": 5, "ints": 7, "floats": 6, "strings": 8}


def read_attribute(a, kind, folder, limit, where):
    """An AttributeProto's value as Python data of the kind the row expects."""
    if a.ref_attr_name:
        raise OnnxUnsupportedError(f"{where}: attribute {a.name!r} refers to a function attribute")
    if a.type not in (0, KINDS[kind]):
        raise OnnxError(f"{where}: attribute {a.name!r} has type {a.type}, expected {kind}")
    try:
        if kind == "i":
            return int(a.i)
        if kind == "f":
            return float(a.f)
        if kind == "s":
            return a.s.decode("utf-8")
        if kind == "t":
            return read_tensor(a.t, folder, limit, f"{where}: attribute {a.name!r}")
        if kind == "g":
            return a.g
        if kind == "ints":
            return [int(v) for v in a.ints]
        if kind == "floats":
            return [float(v) for v in a.floats]
        return [s.decode("utf-8") for s in a.strings]
    except UnicodeDecodeError:
        raise OnnxError(f"{where}: attribute {a.name!r} is not valid UTF-8") from None
