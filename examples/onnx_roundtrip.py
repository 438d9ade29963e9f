"""A model in from ONNX, fine-tuned in exprvm, and out again.

    python examples/onnx_roundtrip.py                 # PyTorch's model when torch is installed
    python examples/onnx_roundtrip.py --source helper # a model built with onnx.helper
    python examples/onnx_roundtrip.py --smoke         # tiny and quick (the tests run this)

An MLP classifying scikit-learn's 8x8 digits is written as ONNX (by torch.onnx.export,
or with onnx.helper), imported with ev.onnx.load (its initializers become exprvm
parameters), compiled and printed, compared with ONNX Runtime on the same batch,
fine-tuned for a few Adam steps on the digits, and exported back with ev.onnx.export;
ONNX Runtime then runs the fine-tuned model to exprvm's outputs.
Needs `pip install 'exprvm[onnx]'` (onnx, onnxruntime) and scikit-learn.
"""
import argparse
import io
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402

F32 = np.float32


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=["auto", "torch", "helper"], default="auto")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--out", default="out")
    p.add_argument("--smoke", action="store_true", help="a tiny run (tests)")
    return p.parse_args(argv)


def digits(n):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(F32)
    return x[:n], d.target[:n].astype(np.int64)


def from_torch(hidden):
    """The MLP as PyTorch writes it: Gemm, Relu, Gemm, LogSoftmax; the batch axis symbolic."""
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10),
                              torch.nn.LogSoftmax(dim=-1)).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(1, 64),), f, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logp"], dynamic_axes={"x": {0: "batch"}})
    return f.getvalue()


def from_helper(hidden):
    """The same MLP built node by node with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = {"fc1.weight": rng.normal(0, 0.2, (hidden, 64)), "fc1.bias": np.zeros(hidden),
             "fc2.weight": rng.normal(0, 0.2, (10, hidden)), "fc2.bias": np.zeros(10)}
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["z"], transB=1),
             helper.make_node("LogSoftmax", ["z"], ["logp"], axis=-1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("batch", 64))],
                              [helper.make_tensor_value_info("logp", TensorProto.FLOAT, ("batch", 10))],
                              [numpy_helper.from_array(a.astype(F32), k) for k, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def onnx_runtime(model_bytes, x):
    import onnxruntime as ort
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(argv=None):
    args = parse(argv)
    if args.smoke:
        args.steps, args.batch, args.hidden = 15, 32, 16
    source = args.source
    if source == "auto":
        try:
            import torch  # noqa: F401
            source = "torch"
        except ImportError:
            source = "helper"
    data = from_torch(args.hidden) if source == "torch" else from_helper(args.hidden)
    print(f"model from {source}: {len(data)} bytes of ONNX")

    x_all, t_all = digits(args.batch * 4)
    g, (x,), (logp,) = ev.onnx.load(data, shapes={"x": (args.batch, 64)})
    print("parameters:", ", ".join(f"{p.name} {p.shape}" for p in g.params()))
    t = g.tensor("t", (args.batch,), np.int64)
    loss = -ev.mean(ev.sum(logp * ev.one_hot(t, 10, F32), axis=1))
    params = g.params()
    ev.grad(loss, params)
    m = ev.TapeMachine(g, outputs=[logp, loss])
    print(m.program)

    xb = x_all[:args.batch]
    out, _ = m.run({x: xb, t: t_all[:args.batch]})
    print(f"onnx runtime vs exprvm before fine-tuning: max relative difference "
          f"{rel_diff(out, onnx_runtime(data, xb)):.1e}")

    opt = ev.solvers.Adam(lr=0.01)
    losses = []
    for step in range(args.steps):
        rows = slice((step % 4) * args.batch, (step % 4 + 1) * args.batch)
        _, value = m.run({x: x_all[rows], t: t_all[rows]})
        losses.append(float(value))
        opt.step(params)
    print(f"loss first {losses[0]:.4f} last {losses[-1]:.4f}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "mlp_finetuned.onnx")
    ev.onnx.export(g, [logp], path, inputs=[x])
    out, _ = m.run({x: xb, t: t_all[:args.batch]})
    with open(path, "rb") as f:
        tuned = f.read()
    print(f"exported {path}; onnx runtime vs exprvm after fine-tuning: max relative difference "
          f"{rel_diff(out, onnx_runtime(tuned, xb)):.1e}")


if __name__ == "__main__":
    main()
