"""Imported ONNX models: inference time of exprvm's TapeMachine against ONNX Runtime (and
PyTorch eager, which wrote the models), and the time ev.onnx.load + compiling take.

    python benchmarks/bench_onnx.py              # full run (quiet machine only)
    python benchmarks/bench_onnx.py --quick      # fewer rounds
    python benchmarks/bench_onnx.py --smoke      # 2 rounds: checks that it runs

Models (float32, exported by torch.onnx.export: needs torch and onnxruntime): an MLP 784-256-10 at batch 64, a small convnet at batch 32 (conv-BN-relu-
pool x2, linear head), a one-layer LSTM 128 over 25 steps at batch 32. Every cell is the
median of --rounds rounds of --inner runs; ratios are to ONNX Runtime in the same run.
BLAS, OpenMP, ONNX Runtime and torch use one thread (set before numpy loads).
"""
import argparse
import io
import os
import sys
import time
import warnings

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402
from timing import median_ms  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--inner", type=int, default=None)
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (2 if a.smoke else 5 if a.quick else 15)
    a.inner = a.inner or (1 if a.smoke else 10)
    return a


def torch_models():
    import torch
    from torch import nn
    torch.set_num_threads(1)
    torch.manual_seed(0)

    class LSTMHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(64, 128), nn.Linear(128, 64)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    conv = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    return {"mlp 784-256-10, batch 64": (nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
                                         torch.randn(64, 784)),
            "convnet 28x28, batch 32": (conv, torch.randn(32, 1, 28, 28)),
            "lstm 128, 25 steps, batch 32": (LSTMHead(), torch.randn(25, 32, 64))}


def export(model, x):
    import torch
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), f, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"])
    return f.getvalue()


def main(argv=None):
    args = parse(argv)
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    print(f"{'model':32s} {'load+compile ms':>16s} {'onnxruntime ms':>15s} {'exprvm ms':>10s} {'ratio':>6s} "
          f"{'torch ms':>9s}")
    for name, (model, x) in torch_models().items():
        data = export(model, x)
        xs = x.numpy()
        t0 = time.perf_counter()
        g, (xin,), outs = ev.onnx.load(data)
        m = ev.TapeMachine(g, outputs=outs, fuse="sync")      # the fused program from the first run
        load_ms = (time.perf_counter() - t0) * 1e3
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        t_ort = median_ms(lambda: sess.run(None, {"x": xs}), args.rounds, args.inner)
        t_ev = median_ms(lambda: m.run({xin: xs}), args.rounds, args.inner)
        import torch
        with torch.no_grad():
            t_torch = median_ms(lambda: model(x), args.rounds, args.inner)
        print(f"{name:32s} {load_ms:16.1f} {t_ort:15.3f} {t_ev:10.3f} {t_ev / t_ort:6.2f} {t_torch:9.3f}")


if __name__ == "__main__":
    main()
