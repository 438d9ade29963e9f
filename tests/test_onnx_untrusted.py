"""A model file is untrusted input: sizes that do not fit the bytes or the limit, external
data outside the model's folder, cycles, undefined inputs, truncated and corrupted files
are refused with OnnxError before anything large is allocated; fuzzed copies of the test
models load, or are refused with a typed error, and never crash."""
import os
import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import exprvm as ev  # noqa: E402
import onnx_models as M  # noqa: E402


def _relu_of(tensor, opset=17):
    """x + tensor, relu'd: a model whose one initializer is `tensor`."""
    nodes = [helper.make_node("Add", ["x", tensor.name], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (4,))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (4,))], [tensor])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _huge(dims, raw=b"\0" * 16):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
    t.raw_data = raw
    return t


@pytest.mark.parametrize("dims, message", [((4096, 4096), "declares shape .* holds 16 bytes"),
                                           ((2 ** 20, 2 ** 20), "over the limit"),
                                           ((-1, 4), "negative dimension")])
def test_a_tensor_larger_than_its_bytes_or_the_limit_is_refused_unallocated(dims, message):
    data = _relu_of(_huge(dims)).SerializeToString()
    with pytest.raises(ev.OnnxError, match=message):
        ev.onnx.load(data)
    peak = []

    def attempt():
        try:
            ev.onnx.load(data)
        except ev.OnnxError:
            peak.append(True)
    assert _peak_bytes(attempt) < 4 << 20 and peak


def test_max_elements_bounds_every_tensor_and_value():
    m = _relu_of(numpy_helper.from_array(np.ones(4, np.float32), "w"))
    with pytest.raises(ev.OnnxError, match="over the limit of 3"):
        ev.onnx.load(m, max_elements=3)
    # a value made at import from a small model: ConstantOfShape of a huge shape
    shape = numpy_helper.from_array(np.array([2 ** 20, 2 ** 20], np.int64), "shape")
    g = helper.make_graph([helper.make_node("ConstantOfShape", ["shape"], ["y"])], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    big = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert _peak_bytes(lambda: pytest.raises(ev.OnnxError, ev.onnx.load, big)) < 4 << 20


def _external(tmp_path, location, offset=0, length=16, write=True):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    if write:
        (folder / "weights.bin").write_bytes(np.arange(8, dtype=np.float32).tobytes())
    path = folder / "model.onnx"
    path.write_bytes(_relu_of(t).SerializeToString())
    return path


def test_external_data_inside_the_folder_loads(tmp_path):
    path = _external(tmp_path, "weights.bin", offset=16)
    g, (x,), (y,) = ev.onnx.load(path)
    ev.LispMachine(g, outputs=[y]).run({x: np.zeros(4, np.float32)})
    np.testing.assert_array_equal(y.value, [4, 5, 6, 7])
    with pytest.raises(ev.OnnxError, match="needs the model loaded from a path"):
        ev.onnx.load(path.read_bytes())


def test_external_data_outside_the_folder_or_the_file_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\1" * 16)
    os.symlink(secret, tmp_path / "link.bin")
    cases = [("../secret.bin", {}, "outside the model's folder"),
             (str(secret), {}, "outside the model's folder"),
             ("weights.bin", {"offset": 24}, "does not hold"),
             ("weights.bin", {"length": 12}, "does not hold"),
             ("missing.bin", {}, "does not exist")]
    for location, kw, message in cases:
        path = _external(tmp_path, location, **kw)
        with pytest.raises(ev.OnnxError, match=message):
            ev.onnx.load(path)
    (tmp_path / "model" / "escape.bin").symlink_to(secret)
    with pytest.raises(ev.OnnxError, match="a link leads out"):
        ev.onnx.load(_external(tmp_path, "escape.bin"))


def _graph_of(nodes, inputs=("x",)):
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, (3,)) for n in inputs]
    g = helper.make_graph(nodes, "g", vis, [helper.make_tensor_value_info("y", TensorProto.FLOAT, (3,))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_cycles_undefined_inputs_and_twice_made_values_are_refused():
    cycle = _graph_of([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                       helper.make_node("Relu", ["a"], ["b"], name="second"),
                       helper.make_node("Relu", ["a"], ["y"])])
    with pytest.raises(ev.OnnxError, match="cycle through node 'first'"):
        ev.onnx.load(cycle)
    undefined = _graph_of([helper.make_node("Add", ["x", "nowhere"], ["y"], name="adder")])
    with pytest.raises(ev.OnnxError, match="adder.*'nowhere' is not defined"):
        ev.onnx.load(undefined)
    twice = _graph_of([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])])
    with pytest.raises(ev.OnnxError, match="'y' is produced twice"):
        ev.onnx.load(twice)


def test_truncated_and_garbage_files_are_refused(tmp_path):
    good = M.mlp(np.random.default_rng(0))[0].SerializeToString()
    for data in (b"", b"\x08", good[:len(good) // 3], good[:-7], b"not an onnx model at all" * 3):
        path = tmp_path / "bad.onnx"
        path.write_bytes(data)
        with pytest.raises(ev.OnnxError):
            ev.onnx.load(path, shapes={"x": (2, 8)})
    with pytest.raises(ev.OnnxError, match="cannot read"):
        ev.onnx.load(tmp_path / "missing.onnx")


# -- fuzzing -----------------------------------------------------------------------------

def _models():
    rng = np.random.default_rng(7)
    return [M.mlp(rng, batch=5)[0], M.convnet(rng)[0], M.recurrent(rng, lens=[4, 2])[0], M.attention(rng)[0],
            M.scan_axes(rng), M.loop_scan_outputs(rng), M.loop_while(rng), M.loop_with_if(rng)]


def _graphs(g):
    """A graph and its subgraphs (loop bodies, branches), depth first."""
    out = [g]
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += _graphs(a.g)
    return out


def _load_and_walk(data):
    """Load at a small limit; a model that loads runs on the LispMachine (zero inputs)."""
    try:
        g, ins, outs = ev.onnx.load(data, max_elements=1 << 16)
        ev.LispMachine(g, outputs=outs).run({n: np.zeros(n.shape, n.dtype) for n in ins})
    except ev.ExprError:
        pass


def test_byte_level_corruption_is_refused_or_loads():
    rng = np.random.default_rng(11)
    for m in _models():
        good = bytearray(m.SerializeToString())
        for _ in range(60):
            bad = bytearray(good)
            kind = rng.integers(3)
            if kind == 0:
                for i in rng.integers(0, len(bad), rng.integers(1, 4)):
                    bad[i] ^= int(rng.integers(1, 256))
            elif kind == 1:
                bad = bad[:rng.integers(0, len(bad))]
            else:
                i = int(rng.integers(0, len(bad)))
                bad[i:i] = rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8).tobytes()
            _load_and_walk(bytes(bad))


_NUMBERS = (-(2 ** 40), -3, -1, 0, 1, 2, 3, 7, 2 ** 31, 2 ** 40)


def _mutate(m, rng):
    """One random structural change to a copy of m: an attribute, a dimension, an input name,
    an operator, a tensor's bytes or a node removed."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    g = pick([gr for gr in _graphs(m.graph) if len(gr.node)])     # the model's graph, or a body in it
    kind = int(rng.integers(6))
    nodes = list(g.node)
    node = pick(nodes)
    if kind == 0 and node.attribute:
        a = pick(list(node.attribute))
        if a.ints:
            a.ints[int(rng.integers(len(a.ints)))] = pick(_NUMBERS)
        elif a.type == onnx.AttributeProto.INT:
            a.i = pick(_NUMBERS)
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = float(pick(_NUMBERS))
        else:
            a.type = onnx.AttributeProto.INTS
    elif kind == 1:
        t = pick(list(g.initializer) + ([None] if len(g.input) else []) or [None])
        dims = t.dims if t is not None else g.input[0].type.tensor_type.shape.dim if len(g.input) else []
        if len(dims):
            k = int(rng.integers(len(dims)))
            if t is not None:
                dims[k] = pick(_NUMBERS[1:-2])
            else:
                dims[k].dim_value = pick((0, 1, 2, 3, 7))
    elif kind == 2 and node.input:
        names = [i for n in nodes for i in n.output] + [i.name for i in g.input] + ["", "nowhere"]
        node.input[int(rng.integers(len(node.input)))] = pick(names)
    elif kind == 3:
        node.op_type = pick(["Relu", "Concat", "Gemm", "Reshape", "Slice", "LSTM", "MaxPool", "Where",
                             "Softmax", "Unsqueeze", "Gather", "Expand", "Conv", "Transpose", "Loop", "Scan",
                             "If", "Identity"])
    elif kind == 4 and g.initializer:
        t = pick(list(g.initializer))
        t.raw_data = t.raw_data[:int(rng.integers(len(t.raw_data) + 1))]
    else:
        g.node.remove(node)
    return m.SerializeToString()


def test_structural_corruption_is_refused_or_loads():
    rng = np.random.default_rng(12)
    for m in _models():
        for _ in range(100):
            _load_and_walk(_mutate(m, rng))
