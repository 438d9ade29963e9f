"""Data-parallel char-RNN training: 1 rank against N ranks under mpirun, in one run.

    python benchmarks/bench_distributed.py              # 1 and 2 ranks, the issue's sizes
    python benchmarks/bench_distributed.py --smoke      # tiny sizes, a few steps: does it run?

The model is examples/char_rnn.py's: an LSTM (hidden 128) over 25 characters per
step, batch 32 streams per rank, Adam with a global-norm clip, on the example's
default text (each rank on its own part). Every process runs one BLAS and one
OpenMP thread (one core each), launched by `mpirun --bind-to core`.

Per rank count it reports (medians over the timed steps of rank 0):
  chars/s         characters of all ranks per second of a whole training step
                  (run + Adam step); scaling = chars/s over (ranks x 1 rank's chars/s)
  step            the step with the compiled all-reduce; `local` the same step on a
                  TapeMachine without comm, timed on every rank at once (the same load)
  allreduce       the step's extra time over `local`, and its share of the step; and
                  `isolated`: ctx.allreduce_grads of the same gradients alone
  bytes           gradient bytes each rank contributes per step, and the buckets' sizes
Then the loss check: 1 rank with batch ranks*32 and `ranks` ranks with 32 each see
the same characters per step (the same streams, even); the mean loss of the last
tenth of --loss-steps steps should agree to noise.

NOTE: timings are only meaningful on an otherwise idle machine (see DESIGN.md).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "EXPRVM_THREADS": "1"}
ONE_MACHINE = {"OMPI_MCA_btl": "self,sm", "OMPI_MCA_pml": "ob1"}    # shared memory, no network probes


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and few steps (checks it runs)")
    ap.add_argument("--ranks", default="1,2", help="rank counts to compare (the first is the base)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seq", type=int, default=25)
    ap.add_argument("--batch", type=int, default=32, help="streams per rank")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    ap.add_argument("--loss-steps", type=int, default=600, help="steps of the loss check (0: none)")
    ap.add_argument("--json", help="also write every figure here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)       # under mpirun: write results here
    ap.add_argument("--mode", default="speed", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.smoke:
        a.hidden, a.seq, a.batch = 16, 5, 4
        a.warmup, a.steps, a.loss_steps = 2, 5, 5
    return a


# -- under mpirun ----------------------------------------------------------------------

class Job:
    """examples/char_rnn.py's model and training step on this rank's part of the text."""

    def __init__(self, args, batch, comm):
        import exprvm as ev
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from char_rnn import CharModel
        from common import Vocab, load_text

        text, _ = load_text(None)
        vocab = Vocab(text)
        data = vocab.encode(text)
        if comm is not None:
            n = (len(data) - 1) // comm.size
            data = data[comm.rank * n:(comm.rank + 1) * n + 1]
        self.model = CharModel(len(vocab), "lstm", args.hidden, 1, seed=0)
        g = self.g = ev.Graph("char_rnn")
        self.ids, self.targets, self.state0, self.loss, self.final = self.model.sequence(g, args.seq, batch)
        ev.grad(self.loss, self.model.nodes(g))
        self.outputs = [self.loss] + ev.nn.flat(self.final)
        self.machine = ev.TapeMachine(g, outputs=self.outputs, comm=comm)
        self.streams, self.window = ev.data.TextStreams(data, batch, args.seq), 0
        self.opt = ev.solvers.Adam(lr=2e-3, clip_norm=5.0)
        self.feeds = {}
        self.zero = self.model.rnn.zero_state(batch)

    def local(self):
        """A TapeMachine of the same graph without comm: the step's compute alone."""
        import exprvm as ev
        return ev.TapeMachine(self.g, outputs=self.outputs, fuse="sync")   # as a comm= program compiles

    def step(self, machine=None):
        import exprvm as ev
        feeds = self.feeds
        x, y = self.streams[self.window]
        reset, self.window = self.window == 0, (self.window + 1) % len(self.streams)
        if reset:
            for ins, vals in zip(self.state0, self.zero):
                feeds.update(zip(ins, vals))
        feeds[self.ids], feeds[self.targets] = x, y
        (machine or self.machine).run(feeds)
        value = float(self.loss.value)
        self.opt.step(self.model.collect_grads(self.g))
        feeds.update(ev.nn.StackedRNN.carry(self.state0, self.final))
        return value


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def speed(args, ctx):
    job = Job(args, args.batch, ctx)
    for _ in range(args.warmup):
        job.step()
    ctx.barrier()
    with_comm = timed(job.step, args.steps)
    plain = job.local()             # every rank runs it at the same time: the same load
    for _ in range(args.warmup):
        job.step(plain)
    ctx.barrier()
    alone = timed(lambda: job.step(plain), args.steps)
    job.machine.run(job.feeds)      # the gradients of the machine with comm, to all-reduce alone
    params = job.model.collect_grads(job.g)
    ctx.barrier()
    isolated = timed(lambda: ctx.allreduce_grads(params), args.steps)
    prog = job.machine.program
    buckets = [prog.registers[i.out].nbytes for i in prog.instrs if i.op == "allreduce_start"]
    med = statistics.median
    return {"ranks": ctx.size, "step_s": med(with_comm), "local_s": med(alone),
            "isolated_s": med(isolated), "chars_per_s": ctx.size * args.seq * args.batch / med(with_comm),
            "bucket_bytes": buckets, "payload_bytes": sum(buckets),
            "wire_bytes": 2 * (ctx.size - 1) / ctx.size * sum(buckets)}


def losses(args, ctx, total):
    """Mean loss over the last tenth of the steps; batch total // size per rank."""
    job = Job(args, total // ctx.size, ctx)
    seen = [ctx.mean(job.step()) for _ in range(args.loss_steps)]
    tail = seen[-max(1, len(seen) // 10):]
    return {"ranks": ctx.size, "batch_per_rank": total // ctx.size, "loss_tail": sum(tail) / len(tail),
            "loss_first": seen[0]}


def worker(args):
    import exprvm as ev
    ctx = ev.distributed.init()
    if args.mode == "speed":
        result = speed(args, ctx)
    else:
        result = losses(args, ctx, int(args.mode.split("=")[1]))
    if ctx.is_root:
        with open(args.worker, "w") as f:
            json.dump(result, f)


# -- the launcher ------------------------------------------------------------------------

def mpirun():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.path.exists(here) else "mpirun"


def launch(args, n, mode):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [mpirun(), "--allow-run-as-root", "--oversubscribe", "--bind-to", "core", "-n", str(n),
               sys.executable, os.path.abspath(__file__), "--worker", out, "--mode", mode,
               "--hidden", str(args.hidden), "--seq", str(args.seq), "--batch", str(args.batch),
               "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--loss-steps", str(args.loss_steps)]
        proc = subprocess.run(cmd, env=dict(os.environ, **THREADS, **ONE_MACHINE), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"mpirun -n {n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)


def report(args, speeds, checks):
    base = speeds[0]
    print(f"char-RNN LSTM hidden {args.hidden}, seq {args.seq}, batch {args.batch} per rank; "
          f"{args.steps} timed steps, medians of rank 0")
    print(f"{'ranks':>5} {'chars/s':>9} {'scaling':>8} {'step':>9} {'local':>9} {'allreduce':>10} "
          f"{'share':>6} {'isolated':>9} {'bytes/step':>11}  buckets")
    for s in speeds:
        scaling = s["chars_per_s"] / (s["ranks"] / base["ranks"] * base["chars_per_s"])
        extra = max(0.0, s["step_s"] - s["local_s"])
        print(f"{s['ranks']:>5} {s['chars_per_s']:>9,.0f} {scaling:>7.0%} {1e3 * s['step_s']:>7.2f}ms "
              f"{1e3 * s['local_s']:>7.2f}ms {1e3 * extra:>8.3f}ms {extra / s['step_s']:>6.1%} "
              f"{1e3 * s['isolated_s']:>7.3f}ms {s['payload_bytes']:>11,}  "
              + ", ".join(f"{b / 1000:.1f} kB" for b in s["bucket_bytes"]))
    for c in checks:
        print(f"loss check: {c['ranks']} rank(s) x batch {c['batch_per_rank']}: mean loss of the last "
              f"tenth of {args.loss_steps} steps {c['loss_tail']:.4f} (first step {c['loss_first']:.4f})")


def main(argv=None):
    args = parse(argv)
    if args.worker:
        return worker(args)
    counts = [int(n) for n in args.ranks.split(",")]
    speeds = [launch(args, n, "speed") for n in counts]
    checks = []
    if args.loss_steps:
        total = max(counts) * args.batch
        checks = [launch(args, n, f"loss={total}") for n in (counts[0], max(counts))]
    report(args, speeds, checks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"speed": speeds, "loss": checks, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
