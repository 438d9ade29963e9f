"""GPU figures of issue 14, measured in one run on one device:

  onemil   sigmoid and tanh on 10^6 float32, resident: exprvm CUDA against CuPy
  lstm     char-RNN LSTM step (hidden 512, batch 128, seq 50, vocab 65): exprvm
           TapeMachine(device="cuda") + SGD against PyTorch CUDA eager (same algorithm)
  mlp      MLP 784-128-10 step, batch 64: the same two
  lstm_b1  the LSTM step at batch 1 (launch-bound)
           each exprvm step twice: replayed as one CUDA graph (the default) and launch
           by launch (cuda_graph=False)
  memory   device memory after 100 and after 10,000 exprvm MLP steps, and after close()

Every step moves its batch in and its loss out (torch: .to("cuda") and .item()), so
both do what a training loop does. Times are medians of blocks of calls, each block
ended by a device synchronize; the ratios are exprvm / peer.

    python benchmarks/bench_gpu.py                 # on a GPU machine (results also in $OUT)
    python benchmarks/bench_gpu.py --smoke --twin  # tiny sizes on the host twin: checks the
                                                   # script runs, measures nothing meaningful
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402
import exprvm.cuda as cuda  # noqa: E402
import models  # noqa: E402
import timing  # noqa: E402
from exprvm import kernels  # noqa: E402

F32 = np.float32


def onemil(a):
    n = 1000 if a.smoke else 1_000_000
    x = np.random.default_rng(0).standard_normal(n).astype(F32)
    dx, dout = cuda.to_device(x), cuda.empty(n, F32)
    rows = {}
    for op in ("sigmoid", "tanh"):
        fn = kernels.unary(op, F32, "cuda")
        rows[f"exprvm cuda {op}"] = timing.median_ms(lambda: fn(dx, dout), a.blocks, a.calls, warmup=1,
                                                        sync=cuda.synchronize)
    try:
        import cupy
    except ImportError:
        return rows
    cx, cy = cupy.asarray(x), cupy.empty(n, F32)
    sig = cupy.ElementwiseKernel("T x", "T y", "y = 1 / (1 + exp(-x))", "ev_bench_sigmoid")
    sync = cupy.cuda.Device().synchronize
    rows["cupy sigmoid"] = timing.median_ms(lambda: sig(cx, cy), a.blocks, a.calls, warmup=1,
                                                        sync=sync)
    rows["cupy tanh"] = timing.median_ms(lambda: cupy.tanh(cx, out=cy), a.blocks, a.calls, warmup=1,
                                                        sync=sync)
    return rows


def sizes(name, smoke):
    if name in ("lstm", "lstm_b1"):
        batch = 1 if name == "lstm_b1" else (4 if smoke else 128)
        return dict(vocab=12, hidden=8, steps=5, batch=batch) if smoke else dict(vocab=65, hidden=512, steps=50,
                                                                                 batch=batch)
    return dict(sizes=(20, 8, 6), batch=6) if smoke else dict(sizes=(784, 128, 10), batch=64)


def build(name, smoke):
    s = sizes(name, smoke)
    if name in ("lstm", "lstm_b1"):
        w = models.rnn_weights(s["vocab"], s["hidden"], gates=4)
        data = models.rnn_data(s["vocab"], s["steps"], s["batch"])
        return w, data, lambda g, w: models.lstm(g, w, s["steps"], s["batch"])
    w, data = models.mlp_weights(s["sizes"]), models.mlp_data(s["sizes"], s["batch"])
    return w, data, lambda g, w: models.mlp(g, w, s["batch"])


def exprvm_step(name, smoke, lr=0.01, cuda_graph=None):
    w, data, make = build(name, smoke)
    m = make(ev.Graph(), {k: v.copy() for k, v in w.items()})
    tm = ev.TapeMachine(m.graph, [m.cost], device="cuda", cuda_graph=cuda_graph)
    opt = ev.solvers.SGD(lr=lr)
    feeds = m.feeds(data)

    def step():
        tm.run(feeds)
        float(np.asarray(m.cost.value))
        opt.step(m.params)
    moves = sum(i.op in ("to_device", "to_host") for i in tm.program.instrs)
    return step, tm, moves


def torch_step(name, smoke, lr=0.01):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    F = torch.nn.functional
    w, data, _ = build(name, smoke)
    P = {k: torch.tensor(v, device="cuda", requires_grad=True) for k, v in w.items()}

    def loss_fn(D):
        if name == "mlp":
            h = torch.relu(D["x"] @ P["W0"] + P["b0"])
            return F.cross_entropy(h @ P["W1"] + P["b1"], D["y"])
        ids, tg = D["ids"], D["targets"]
        H = P["Whh"].shape[0]
        h = c = torch.zeros((ids.shape[1], H), device="cuda")
        X = P["Wxh"][ids] + P["bh"]
        hs = []
        for t in range(ids.shape[0]):
            z = X[t] + h @ P["Whh"]
            i, f, o = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]), torch.sigmoid(z[:, 2 * H:3 * H])
            c = f * c + i * torch.tanh(z[:, 3 * H:])
            h = o * torch.tanh(c)
            hs.append(h)
        Hs = torch.stack(hs).reshape(-1, H)
        return F.cross_entropy(Hs @ P["Why"] + P["by"], tg.reshape(-1), reduction="sum")

    def step():
        D = {k: torch.from_numpy(v).to("cuda") for k, v in data.items()}
        loss = loss_fn(D)
        loss.backward()
        loss.item()
        with torch.no_grad():
            for p in P.values():
                p -= lr * p.grad
                p.grad = None
    return step, torch.cuda.synchronize


def steps(a, name):
    rows = {}
    for how, setting in (("", None), (" launch by launch", False)):
        step, tm, moves = exprvm_step(name, a.smoke, cuda_graph=setting)
        rows[f"exprvm {name} step{how}"] = timing.median_ms(step, a.blocks, max(1, a.calls // 20), warmup=1,
                                                            sync=cuda.synchronize)
        if setting is None:
            rows[f"exprvm {name} transfers per step"] = moves
            rows[f"exprvm {name} CUDA graph of instructions"] = str(tm.cuda_graph)
        tm.close()
    peer = torch_step(name, a.smoke)
    if peer is not None:
        rows[f"torch {name} step"] = timing.median_ms(peer[0], a.blocks, max(1, a.calls // 20), warmup=1,
                                                        sync=peer[1])
    return rows


def memory(a):
    cuda.synchronize()
    before = cuda.mem_info()[0]
    step, tm, _ = exprvm_step("mlp", a.smoke)
    for _ in range(100):
        step()
    cuda.synchronize()
    at_100 = cuda.mem_info()[0]
    for _ in range(100 if a.smoke else 10_000):
        step()
    cuda.synchronize()
    at_10k = cuda.mem_info()[0]
    tm.close()
    cuda.synchronize()
    return {"free bytes before": before, "free after 100 steps": at_100,
            "free after 10,000 steps": at_10k, "free after close()": cuda.mem_info()[0],
            "flat (10,000 == 100)": at_10k == at_100}


def report(rows):
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        shown = f"{v:.4f} ms" if isinstance(v, float) else str(v)
        print(f"{k:<{width}}  {shown}")
    pairs = [("exprvm cuda sigmoid", "cupy sigmoid"), ("exprvm cuda tanh", "cupy tanh")]
    for name in ("lstm", "mlp", "lstm_b1"):
        pairs += [(f"exprvm {name} step", f"torch {name} step"),
                  (f"exprvm {name} step launch by launch", f"torch {name} step"),
                  (f"exprvm {name} step launch by launch", f"exprvm {name} step")]
    for a, b in pairs:
        if a in rows and b in rows:
            print(f"ratio {a} / {b}: {rows[a] / rows[b]:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="onemil,lstm,mlp,lstm_b1,memory")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats")
    p.add_argument("--twin", action="store_true", help="run on the CUDA host twin (no GPU needed)")
    a = p.parse_args(argv)
    a.blocks, a.calls = (2, 4) if a.smoke else (7, 200)
    if a.twin:
        from exprvm.device import twin
        where = twin.use()
    else:
        where = contextlib.nullcontext()
    with where:
        if not cuda.is_available():
            raise SystemExit(f"no CUDA device: {cuda.unavailable_reason()}")
        info = cuda.device_info(0)
        print(f"device: {info['name']}, {info['total_bytes'] / 2**30:.1f} GiB, capability {info['capability']}")
        rows = {"device": info["name"]}
        for part in a.only.split(","):
            rows.update({"onemil": onemil, "memory": memory}.get(part, lambda a: steps(a, part))(a))
    report(rows)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "bench_gpu.json"), "w") as f:
            json.dump({k: (bool(v) if isinstance(v, np.bool_) else v) for k, v in rows.items()}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
