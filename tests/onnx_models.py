"""Small ONNX models built with onnx.helper for the ONNX tests (an MLP, a convnet, LSTM and
GRU layers, an attention block, Scan / Loop / If models), ONNX Runtime as the reference, and the comparison the
tests make: the largest difference relative to the largest reference value."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import exprvm as ev

F32 = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits, opset=17, name="model"):
    """A checked ModelProto: inputs {name: (elem_type, shape)}, outputs [names], inits {name: array}."""
    vis = [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()]
    tensors = [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()]
    g = helper.make_graph(nodes, name, vis, [], tensors)
    g.value_info.extend(helper.make_tensor_value_info(n, F32, None) for n in outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)     # NOTE: what the onnxruntime wheel reads
    # the outputs' types and shapes as ONNX's shape inference finds them
    known = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    del m.graph.value_info[:]
    m.graph.output.extend(known[n] for n in outputs)
    onnx.checker.check_model(m)
    return m


def _w(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def mlp(rng, batch="N"):
    inits = {"fc1.weight": _w(rng, 16, 8), "fc1.bias": _w(rng, 16), "fc2.weight": _w(rng, 4, 16),
             "fc2.bias": _w(rng, 4)}
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["z"], transB=1),
             helper.make_node("LogSoftmax", ["z"], ["y"], axis=1)]
    return model(nodes, {"x": (F32, (batch, 8))}, ["y"], inits), {"x": (5, 8)}


def convnet(rng):
    """Conv (asymmetric pads), BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool,
    a Reshape whose shape is computed from Shape / Gather / Unsqueeze / Concat, Gemm, Softmax."""
    inits = {"conv.w": _w(rng, 6, 3, 3, 3), "conv.b": _w(rng, 6), "bn.scale": 1 + _w(rng, 6, scale=0.1),
             "bn.bias": _w(rng, 6), "bn.mean": _w(rng, 6, scale=0.1), "bn.var": 1 + np.abs(_w(rng, 6)),
             "fc.w": _w(rng, 5, 6), "fc.b": _w(rng, 5), "zero": np.array(0, np.int64),
             "minus1": np.array([-1], np.int64), "axes0": np.array([0], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 0, 2, 1], strides=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["a"], ["gap"]),
             helper.make_node("Shape", ["gap"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["gap", "target"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    return model(nodes, {"x": (F32, (2, 3, 9, 8))}, ["y"], inits), {}


def recurrent(rng, op="LSTM", direction="bidirectional", lens=None, **attrs):
    """One LSTM or GRU layer (time-major) with biases and initial states, all its outputs."""
    gates, hidden, width, steps, batch = (4 if op == "LSTM" else 3), 5, 3, 4, 2
    dirs = 2 if direction == "bidirectional" else 1
    inits = {"W": _w(rng, dirs, gates * hidden, width), "R": _w(rng, dirs, gates * hidden, hidden),
             "B": _w(rng, dirs, 2 * gates * hidden), "h0": _w(rng, dirs, batch, hidden)}
    names = ["x", "W", "R", "B", "lens" if lens is not None else "", "h0"]
    outs = ["Y", "Y_h"]
    if op == "LSTM":
        inits["c0"] = _w(rng, dirs, batch, hidden)
        names.append("c0")
        outs.append("Y_c")
    if lens is not None:
        inits["lens"] = np.asarray(lens, np.int32)
    node = helper.make_node(op, names, outs, hidden_size=hidden, direction=direction, **attrs)
    return model([node], {"x": (F32, (steps, batch, width))}, outs, inits), {}


def attention(rng, opset=20):
    """Embedding Gather, LayerNormalization, one causal attention head split in two by
    Reshape / Transpose, Div by Sqrt, Where over a mask, Softmax, Gelu, Expand, residual."""
    d, heads, vocab, t = 8, 2, 11, 5
    mask = np.tril(np.ones((t, t), bool))
    inits = {"emb": _w(rng, vocab, d), "pos": _w(rng, 1, t, d), "ln.g": 1 + _w(rng, d, scale=0.1),
             "ln.b": _w(rng, d, scale=0.1), "wq": _w(rng, d, d), "wk": _w(rng, d, d), "wv": _w(rng, d, d),
             "wo": _w(rng, d, d), "mask": mask, "neg": np.array(-1e9, np.float32),
             "hd": np.array(d // heads, np.float32), "split": np.array([0, 0, heads, d // heads], np.int64),
             "merge": np.array([0, 0, d], np.int64), "expand": np.array([2, 1, 1], np.int64)}
    n = helper.make_node
    nodes = [n("Gather", ["emb", "ids"], ["e"], axis=0), n("Expand", ["pos", "expand"], ["pe"]),
             n("Add", ["e", "pe"], ["x"]),
             n("LayerNormalization", ["x", "ln.g", "ln.b"], ["xn"], axis=-1, epsilon=1e-5)]
    for k in "qkv":
        nodes += [n("MatMul", ["xn", f"w{k}"], [f"{k}0"]), n("Reshape", [f"{k}0", "split"], [f"{k}1"]),
                  n("Transpose", [f"{k}1"], [k], perm=[0, 2, 1, 3])]
    nodes += [n("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), n("MatMul", ["q", "kt"], ["s0"]),
              n("Sqrt", ["hd"], ["sq"]), n("Div", ["s0", "sq"], ["s1"]), n("Where", ["mask", "s1", "neg"], ["s2"]),
              n("Softmax", ["s2"], ["p"], axis=-1), n("MatMul", ["p", "v"], ["o0"]),
              n("Transpose", ["o0"], ["o1"], perm=[0, 2, 1, 3]), n("Reshape", ["o1", "merge"], ["o2"]),
              n("MatMul", ["o2", "wo"], ["o3"]), n("Gelu", ["o3"], ["o4"]), n("Add", ["x", "o4"], ["y"])]
    if opset < 20:   # Gelu is opset 20's; before it, its Erf form
        i = next(k for k, nd in enumerate(nodes) if nd.op_type == "Gelu")
        inits.update(c_half=np.array(0.5, np.float32), c_one=np.array(1.0, np.float32),
                     c_rt2=np.array(np.sqrt(2.0), np.float32))
        nodes[i:i + 1] = [n("Div", ["o3", "c_rt2"], ["g0"]), n("Erf", ["g0"], ["g1"]),
                          n("Add", ["g1", "c_one"], ["g2"]), n("Mul", ["o3", "g2"], ["g3"]),
                          n("Mul", ["g3", "c_half"], ["o4"])]
    return model(nodes, {"ids": (TensorProto.INT64, (2, t))}, ["y"], inits, opset=opset), {}


def feeds_for(m, shapes, rng):
    """Random inputs for a model's graph inputs (integers: ids in range)."""
    out = {}
    for vi in m.graph.input:
        tt = vi.type.tensor_type
        shape = shapes.get(vi.name) or tuple(d.dim_value for d in tt.shape.dim)
        if tt.elem_type == TensorProto.INT64:
            out[vi.name] = rng.integers(0, 11, shape).astype(np.int64)
        else:
            out[vi.name] = rng.standard_normal(shape).astype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return out


def ort_run(m, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def ev_run(m, feeds, machine, shapes=None):
    """Import m and run it on one machine: the outputs' values."""
    g, ins, outs = ev.onnx.load(m, shapes=shapes)
    vm = ev.TapeMachine(g, outputs=outs) if machine == "tape" else ev.LispMachine(g, outputs=outs)
    return vm.run({node: feeds[node.name] for node in ins})


def rel_diff(got, want):
    """max |got - want| / max |want| (0 for two empty or all-zero arrays)."""
    want = np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / (scale or 1.0) if want.size else 0.0


# -- loops and branches (Scan, Loop, If) ----------------------------------------------------

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
n = helper.make_node


def vi(name, t=F, shape=None):
    return helper.make_tensor_value_info(name, t, shape)


def body_graph(nodes, ins, outs, name="body"):
    return helper.make_graph(nodes, name, [vi(*i) for i in ins], [vi(*o) for o in outs])


def checked_model(nodes, inputs, outputs, inits):
    """A checked model: inputs {name: (type, shape)}, outputs {name: (type, shape)}."""
    g = helper.make_graph(nodes, "model", [vi(k, *v) for k, v in inputs.items()],
                          [vi(k, *v) for k, v in outputs.items()],
                          [onnx.numpy_helper.from_array(np.asarray(a), k) for k, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = min(m.ir_version, 10)     # NOTE: what the onnxruntime wheel reads
    onnx.checker.check_model(m, full_check=True)
    return m


def scan_axes(rng):
    """Two states, two scan inputs (one along axis 1 from the end), two scan outputs (one
    stacked on axis 1, from the end); the body reads the weight W by its outer name."""
    body = body_graph([n("MatMul", ["a", "W"], ["aw"]), n("Add", ["aw", "h"], ["s0"]), n("Add", ["s0", "b_row"], ["s1"]),
                  n("Tanh", ["s1"], ["h_out"]), n("ReduceSum", ["h_out"], ["r"], keepdims=0),
                  n("Add", ["tot", "r"], ["tot_out"]), n("Mul", ["h_out", "h_out"], ["sq"]),
                  n("Identity", ["h_out"], ["h_copy"])],
                 [("h", F, (3,)), ("tot", F, ()), ("a", F, (3,)), ("b_row", F, (3,))],
                 [("h_out", F, (3,)), ("tot_out", F, ()), ("h_copy", F, (3,)), ("sq", F, (3,))])
    node = n("Scan", ["h0", "t0", "xa", "xb"], ["h", "t", "ys", "zs"], body=body, num_scan_inputs=2,
             scan_input_axes=[0, 1], scan_input_directions=[0, 1], scan_output_axes=[0, -1],
             scan_output_directions=[0, 1])
    inputs = {"h0": (F, (3,)), "t0": (F, ()), "xa": (F, (5, 3)), "xb": (F, (3, 5))}
    return checked_model([node], inputs, {"h": (F, (3,)), "t": (F, ()), "ys": (F, (5, 3)), "zs": (F, (3, 5))},
                  {"W": _w(rng, 3, 3)})


def scan_reverse(rng):
    body = body_graph([n("Add", ["s", "x"], ["s1"]), n("Mul", ["s1", "k"], ["s_out"]), n("Identity", ["s_out"], ["y"])],
                 [("s", F, (2,)), ("x", F, (2,))], [("s_out", F, (2,)), ("y", F, (2,))])
    node = n("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1, scan_input_directions=[1],
             scan_output_directions=[1])
    return checked_model([node], {"s0": (F, (2,)), "x": (F, (6, 2))}, {"s": (F, (2,)), "y": (F, (6, 2))},
                  {"k": np.array(0.9, np.float32)})


X = {"x": (F, (2, 3))}


def loop_body(cond_out=None, scan_out=False):
    """x_out = tanh(x @ W) + float(i); the condition passed through (or cond_out's nodes)."""
    nodes = [n("MatMul", ["x", "W"], ["xw"]), n("Tanh", ["xw"], ["t"]), n("Cast", ["i"], ["fi"], to=F),
             n("Add", ["t", "fi"], ["x_out"])]
    nodes += cond_out or [n("Identity", ["c"], ["c_out"])]
    outs = [("c_out", B, ()), ("x_out", F, (2, 3))] + ([("x_out_copy", F, (2, 3))] if scan_out else [])
    if scan_out:
        nodes.append(n("Identity", ["x_out"], ["x_out_copy"]))
    return body_graph(nodes, [("i", I64, ()), ("c", B, ()), ("x", F, (2, 3))], outs)


def loop_fori(rng):
    node = n("Loop", ["M", "", "x0"], ["x"], body=loop_body())
    return checked_model([node], {"x0": (F, (2, 3))}, X, {"W": _w(rng, 3, 3), "M": np.array(4, np.int64)})


def loop_scan_outputs(rng):
    node = n("Loop", ["M", "go", "x0"], ["x", "xs"], body=loop_body(scan_out=True))
    inits = {"W": _w(rng, 3, 3), "M": np.array(5, np.int64), "go": np.array(True)}
    return checked_model([node], {"x0": (F, (2, 3))}, dict(X, xs=(F, (5, 2, 3))), inits)


def loop_trips_input(rng):
    node = n("Loop", ["M", "", "x0"], ["x"], body=loop_body())
    return checked_model([node], {"x0": (F, (2, 3)), "M": (I64, ())}, X, {"W": _w(rng, 3, 3)})


def loop_while(rng, fed=True):
    """The condition the body computes: sum(x) < limit (an input), at most M iterations;
    the first condition fed as an input, or none (the first iteration runs)."""
    cond = [n("ReduceSum", ["x_out"], ["total"], keepdims=0), n("Less", ["total", "limit"], ["c_out"])]
    node = n("Loop", ["M", "go" if fed else "", "x0"], ["x"], body=loop_body(cond_out=cond))
    inputs = {"x0": (F, (2, 3)), "limit": (F, ())}
    if fed:
        inputs["go"] = (B, ())
    return checked_model([node], inputs, X, {"W": _w(rng, 3, 3), "M": np.array(30, np.int64)})


def if_dynamic(rng):
    then = body_graph([n("MatMul", ["x", "W"], ["y0"]), n("Tanh", ["y0"], ["y"])], [], [("y", F, (2, 3))], "then")
    other = body_graph([n("Mul", ["x", "two"], ["z"])], [], [("z", F, (2, 3))], "else")
    node = n("If", ["p"], ["out"], then_branch=then, else_branch=other)
    return checked_model([node], {"x": (F, (2, 3)), "p": (B, ())}, {"out": (F, (2, 3))},
                  {"W": _w(rng, 3, 3), "two": np.array(2.0, np.float32)})


def loop_with_if(rng):
    """A Loop whose body branches on its iteration number; the branch reads W two levels up."""
    then = body_graph([n("MatMul", ["x", "W"], ["y0"]), n("Tanh", ["y0"], ["y"])], [], [("y", F, (2, 3))], "then")
    other = body_graph([n("Neg", ["x"], ["z"])], [], [("z", F, (2, 3))], "else")
    body = body_graph([n("Less", ["i", "two"], ["small"]),
                  n("If", ["small"], ["x_out"], then_branch=then, else_branch=other), n("Identity", ["c"], ["c_out"])],
                 [("i", I64, ()), ("c", B, ()), ("x", F, (2, 3))], [("c_out", B, ()), ("x_out", F, (2, 3))])
    node = n("Loop", ["M", "", "x0"], ["x"], body=body)
    inits = {"W": _w(rng, 3, 3), "M": np.array(4, np.int64), "two": np.array(2, np.int64)}
    return checked_model([node], {"x0": (F, (2, 3))}, X, inits)




def assert_gradients_match_finite_differences(g, outs, feeds, rng, eps=1e-6):
    """The gradients of a random weighting of an imported graph's outputs, symbolic
    (ev.grad on the TapeMachine) and run-time (the LispMachine), against central
    differences at four entries of each parameter (float64 graphs)."""
    cost = sum(ev.sum(o * rng.standard_normal(o.shape)) for o in outs)
    params = g.params()
    grads = ev.grad(cost, params)
    symbolic = ev.TapeMachine(g, outputs=[cost] + grads).run(feeds)[1:]
    ev.LispMachine(g, cost=cost, replay=False).run(feeds)
    autodiff = [np.array(p.grad, copy=True) for p in params]
    forward = ev.TapeMachine(g, outputs=[cost], grads=False)
    for p, sym, auto in zip(params, symbolic, autodiff):
        flat = p.value.reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            orig = flat[i]
            flat[i] = orig + eps
            up = float(forward.run(feeds)[0])
            flat[i] = orig - eps
            down = float(forward.run(feeds)[0])
            flat[i] = orig
            fd = (up - down) / (2 * eps)
            for got in (sym.reshape(-1)[i], auto.reshape(-1)[i]):
                assert abs(got - fd) <= 1e-5 * abs(fd) + 1e-6, (p.name, i, got, fd)
