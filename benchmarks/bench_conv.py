"""Convolution speed: conv2d forward + backward, and the digits convnet's training step.

    python benchmarks/bench_conv.py              # full run (quiet machine only)
    python benchmarks/bench_conv.py --quick      # fewer rounds
    python benchmarks/bench_conv.py --smoke      # tiny sizes, 2 rounds: checks that it runs

1. conv2d forward + backward (the input's and the weight's gradients for a given
   output gradient): batch 32, 16 -> 32 channels, 3x3, padding 1, 28x28, float32.
   Rows: handwritten numpy (im2col with sliding_window_view, one matmul each way, the
   input gradient added back one kernel offset at a time), exprvm's TapeMachine on the
   C and numpy backends, PyTorch eager.
2. The digits convnet's full training step (examples/digits_convnet.py: forward,
   backward, batch-norm state updates, Adam), batch 32: TapeMachine, LispMachine (a
   fresh graph per step, as its users build), PyTorch eager with the same model.

Every cell is the median of --rounds rounds of --inner calls; ratios are to the row
named in the header, measured in the same run. BLAS, OpenMP and torch run one
thread (set before numpy loads). Never run this while other work loads the machine.
"""
import argparse
import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "examples")]
import exprvm as ev  # noqa: E402
from timing import median_ms  # noqa: E402
from exprvm.kernels import gemm  # noqa: E402

F32 = np.float32


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 rounds (for tests)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--inner", type=int, default=None, help="calls per round")
    ap.add_argument("--own-gemm", choices=("auto", "on", "off"), default="auto",
                    help="the conv runners' product: the gate's choice (gemm.preferred), exprvm's "
                         "own (on) or numpy's BLAS (off), to measure both paths on any CPU")
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (2 if a.smoke else 5 if a.quick else 15)
    a.inner = a.inner or (1 if a.smoke else 5)
    return a


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


# -- 1. conv2d forward + backward --------------------------------------------------------

def numpy_conv_step(x, w, gy):
    """Forward and backward of a stride-1, padding-1 conv by hand: (y, dx, dw)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2, wd + 2), x.dtype)
    xp[:, :, 1:-1, 1:-1] = x
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))    # n c h w kh kw
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * wd, c * kh * kw)      # the im2col copy
    w2 = w.reshape(o, -1)
    y = (cols @ w2.T).reshape(n, h, wd, o).transpose(0, 3, 1, 2)
    g2 = gy.transpose(0, 2, 3, 1).reshape(n * h * wd, o)
    dw = (g2.T @ cols).reshape(w.shape)
    dcols = (g2 @ w2).reshape(n, h, wd, c, kh, kw)
    dxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + h, j:j + wd] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return y, dxp[:, :, 1:-1, 1:-1], dw


def conv_rows(shape, wshape, args):
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal(shape).astype(F32), rng.standard_normal(wshape).astype(F32) * 0.1
    gv = rng.standard_normal((shape[0], wshape[0]) + shape[2:]).astype(F32)
    rows, check = {}, {}
    rows["numpy (handwritten im2col)"] = lambda: numpy_conv_step(xv, wv, gv)
    y_ref, dx_ref, dw_ref = numpy_conv_step(xv, wv, gv)
    for backend in ("c", "numpy"):
        g = ev.Graph()
        x, w = g.tensor("x", shape, F32, value=xv.copy()), g.tensor("w", wshape, F32, value=wv.copy())
        gy = g.tensor("gy", gv.shape, F32)
        y = ev.conv2d(x, w, padding=1)
        dx, dw = ev.grad(y, [x, w], seed=gy)
        m = ev.TapeMachine(g, outputs=[y, dx, dw], backend=backend, fuse="sync")
        feeds = {gy: gv}
        m.run(feeds)
        check[backend] = (y.value.copy(), dx.value.copy(), dw.value.copy())
        rows[f"exprvm TapeMachine ({backend})"] = lambda m=m, feeds=feeds: m.run(feeds)
    for name, (yv, dxv, dwv) in check.items():     # every row computes the same thing
        for a, b in ((yv, y_ref), (dxv, dx_ref), (dwv, dw_ref)):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3, err_msg=name)
    torch = _torch()
    if torch is not None:
        xt = torch.tensor(xv, requires_grad=True)
        wt = torch.tensor(wv, requires_grad=True)
        gt = torch.tensor(gv)

        def torch_step():
            xt.grad = wt.grad = None
            torch.nn.functional.conv2d(xt, wt, padding=1).backward(gt)
        rows["PyTorch eager"] = torch_step
    return rows


# -- 2. the digits convnet's training step ------------------------------------------------

def digits_rows(batch, args):
    import digits_convnet as D
    rng = np.random.default_rng(1)
    xb = rng.uniform(0, 1, (batch, 1, 8, 8)).astype(F32)
    tb = rng.integers(0, 10, batch)
    rows = {}
    for label, machine in (("exprvm TapeMachine", "tape"), ("exprvm LispMachine (graph per step)", "lisp")):
        model = D.convnet(0)
        step, opt = ev.train.ModelStep(model, ev.nn.mean_cross_entropy, machine=machine), ev.solvers.Adam(model, lr=1e-3)
        rows[label] = lambda step=step, opt=opt: (step(xb, tb), opt.step())
    torch = _torch()
    if torch is not None:
        tn = torch.nn
        model = tn.Sequential(tn.Conv2d(1, 16, 3, padding=1, bias=False), tn.BatchNorm2d(16), tn.ReLU(),
                              tn.MaxPool2d(2), tn.Conv2d(16, 32, 3, padding=1, bias=False), tn.BatchNorm2d(32),
                              tn.ReLU(), tn.MaxPool2d(2), tn.Flatten(), tn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt, tt = torch.tensor(xb), torch.tensor(tb)

        def torch_step():
            opt.zero_grad()
            loss = tn.functional.cross_entropy(model(xt), tt)
            loss.backward()
            opt.step()
            return float(loss.detach())
        rows["PyTorch eager"] = torch_step
    return rows


def table(title, rows, args, ref_names):
    times = {name: median_ms(fn, args.rounds, args.inner) for name, fn in rows.items()}
    refs = [r for r in ref_names if r in times]
    print(f"\n{title}")
    print(f"{'':38s} {'ms':>9s} " + " ".join(f"{'vs ' + r.split(' (')[0]:>14s}" for r in refs))
    for name, ms in times.items():
        print(f"{name:38s} {ms:9.3f} " + " ".join(f"{ms / times[r]:13.2f}x" for r in refs))
    return times


def main(argv=None):
    args = parse(argv)
    if args.own_gemm != "auto":
        with gemm.forced(args.own_gemm == "on"):
            return run(args)
    return run(args)


def run(args):
    print(f"exprvm conv benchmarks: {args.rounds} rounds x {args.inner} calls, medians; 1 thread; "
          f"float32 products on {'exprvm' if gemm.preferred() else 'numpy'}'s"
          + (" (SMOKE: tiny sizes, not timings)" if args.smoke else ""))
    shape, wshape = ((2, 3, 6, 6), (4, 3, 3, 3)) if args.smoke else ((32, 16, 28, 28), (32, 16, 3, 3))
    refs = ["numpy (handwritten im2col)", "PyTorch eager"]
    table(f"conv2d forward + backward, x {shape}, w {wshape}, padding 1, float32", conv_rows(shape, wshape, args),
          args, refs)
    batch = 4 if args.smoke else 32
    table(f"digits convnet training step (forward, backward, state updates, Adam), batch {batch}",
          digits_rows(batch, args), args, ["PyTorch eager"])


if __name__ == "__main__":
    main()
