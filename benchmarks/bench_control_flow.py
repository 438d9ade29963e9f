"""Loops in the tape: the char-RNN steps with their recurrence as one ev.scan against the
same steps unrolled, all in one run.

    python benchmarks/bench_control_flow.py            # the table (a few minutes)
    python benchmarks/bench_control_flow.py --smoke    # tiny sizes, for the tests

Rows:
  compile   seconds to compile the LSTM training step (hidden 128, batch 32): unrolled
            and scan at T=25, scan at T=1000 (scan's T=1000 / T=25 ratio; target 1.2)
  program   instructions of the scan step at T=25 and T=1000 (the same: one loop)
  step      median seconds of a training step (forward, gradients, SGD) at T=25, scan
            and unrolled interleaved, for the LSTM (batch 32; target 1.05) and the
            char-RNN (batch 1; target 1.2), and torch.nn.LSTM on the LSTM step where
            PyTorch is installed
  memory    bytes the T=1000 LSTM step plans (input rows, output layer and loss inside the
            loop), without and with checkpoint=32 (target 1/8)

Every figure comes from this process in this run; a busy machine says little (the
module's README section names the CPU the quoted figures were taken on).
"""
import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402
import models  # noqa: E402
import peers  # noqa: E402

LR = 0.01


def build(kind, name, steps, batch, hidden, vocab=65, checkpoint=None):
    """(TapeMachine, feeds, params) of a training step with SGD."""
    gates = 4 if name.startswith("lstm") else 1
    w = models.rnn_weights(vocab, hidden, gates=gates)
    data = models.rnn_data(vocab, steps, batch)
    g = ev.Graph(f"{name} {kind} T={steps}")
    if kind == "unrolled":
        mdl = (models.lstm if name == "lstm" else models.char_rnn)(g, w, steps, batch)
    else:
        maker = {"lstm": models.lstm_scan, "rnn": models.char_rnn_scan,
                 "lstm-steps": models.lstm_scan_steps}[name]
        mdl = maker(g, w, steps, batch, checkpoint=checkpoint)
    t = time.perf_counter()
    # NOTE: fuse="sync": the fused program from the first step (not its unfused first tier)
    m = ev.TapeMachine(g, outputs=[mdl.cost], fuse="sync")
    compile_s = time.perf_counter() - t
    return m, mdl.feeds(data), mdl.params, compile_s, (w, data)


def step_fn(m, feeds, params):
    def step():
        m.run(feeds)
        for p in params:
            p.value -= LR * p.grad
    return step


def interleaved(fns, rounds, inner):
    """Median seconds per call of each function, timed in turns."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for k, f in enumerate(fns):
            t = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t) / inner)
    return [statistics.median(t) for t in times]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args(argv)
    H, B, T, LONG = (128, 32, 25, 1000) if not a.smoke else (8, 4, 5, 40)
    rounds, inner = (a.rounds, 5) if not a.smoke else (2, 1)
    rows = []
    print(f"bench_control_flow on {cpu_name()}, {os.cpu_count()} CPUs, exprvm {ev.__version__}")

    # compile time and program size
    un, _, _, c_un, _ = build("unrolled", "lstm", T, B, H)
    sc, _, _, c_sc, _ = build("scan", "lstm", T, B, H)
    lg, _, _, c_lg, _ = build("scan", "lstm", LONG, B, H)
    rows.append(("compile LSTM step, unrolled T=%d" % T, f"{c_un:.3f} s", ""))
    rows.append(("compile LSTM step, scan T=%d" % T, f"{c_sc:.3f} s", f"{c_sc / c_un:.2f}x unrolled"))
    rows.append(("compile LSTM step, scan T=%d" % LONG, f"{c_lg:.3f} s", f"{c_lg / c_sc:.2f}x scan T={T}"))
    rows.append(("instructions, scan T=%d / T=%d" % (T, LONG), f"{len(sc.program)} / {len(lg.program)}",
                 f"unrolled T={T}: {len(un.program)}"))

    # step times, interleaved
    for name, batch in (("lstm", B), ("rnn", 1)):
        mu, fu, pu, _, (w, data) = build("unrolled", name, T, batch, H)
        ms, fs, ps, _, _ = build("scan", name, T, batch, H)
        fns = [step_fn(mu, fu, pu), step_fn(ms, fs, ps)]
        labels = ["unrolled", "scan"]
        if name == "lstm" and not a.smoke:
            torch_step = peers.torch_nn_step("lstm_b32", w, data, lr=LR)
            if torch_step is not None:
                fns.append(torch_step)
                labels.append("torch.nn.LSTM")
        times = interleaved(fns, rounds, inner)
        base = times[0]
        for label, t in zip(labels, times):
            rows.append((f"step {name} b{batch} T={T}, {label}", f"{t * 1e3:.3f} ms",
                         f"{t / base:.2f}x unrolled"))

    # memory with checkpointing: the step with its input rows, output layer and loss inside
    # the loop (what it stores for the gradient is then all that grows with T)
    k = 32 if not a.smoke else 8
    full = build("scan", "lstm-steps", LONG, B, H)[0].program.peak_bytes
    ck = build("scan", "lstm-steps", LONG, B, H, checkpoint=k)[0].program.peak_bytes
    rows.append((f"planned bytes, LSTM step T={LONG} in one scan", f"{full:,}", ""))
    rows.append((f"planned bytes, the same with checkpoint={k}", f"{ck:,}", f"{ck / full:.3f}x"))

    width = max(len(r[0]) for r in rows)
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:>14}  {ratio}")
    return rows


if __name__ == "__main__":
    main()
