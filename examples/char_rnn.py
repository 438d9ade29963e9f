"""Character-level language model: an RNN/LSTM/GRU learns to continue a text.

    python examples/char_rnn.py --minutes 1                  # stdlib source, no download
    python examples/char_rnn.py --text shakespeare.txt --cell lstm --minutes 5
    mpirun -n 2 python examples/char_rnn.py --distributed --minutes 1   # data parallel
    python examples/char_rnn.py --device cuda --minutes 1    # the training step on a GPU

The TapeMachine path compiles one graph (seq steps, batch streams; the recurrence
one ev.scan loop, or unrolled with --unroll) once and runs it every step, and draws
its samples with one compiled ev.fori_loop; the final hidden state of a batch is fed as the
initial state of the next (truncated backprop through time), because batch row
b always continues row b of the previous batch (see text_data.Streams).
Loss is cross-entropy in nats per character; `step N loss X` lines show an
exponential moving average of it. Adam's lr starts at --lr and falls along half a
cosine to --min-lr (a tenth of it) over the run's budget, by the clock for
--minutes (on tinyshakespeare, 5 minutes: 1.29 nats/char against 1.33 at a
constant 4e-3 and 1.34 at a constant 2e-3); --decay none keeps it constant.

--distributed (under mpirun): every rank trains the same model on its own
contiguous part of the text, --batch streams per rank; the tape averages the
gradients over the ranks (ev.distributed), so every rank takes the same Adam step.
Rank 0 prints progress (the loss averaged over the ranks), the sample, the loss
PNG and the checkpoints; a checkpoint resumes on any number of ranks.
"""
import argparse
import math
import os
import sys
import time

# NOTE: no thread pinning here: the compiler's thread policy gives each matrix product
# of the step its BLAS threads from its shape (a step's small h @ W one thread, the
# weight gradients summed over all steps more); see README, "Fused kernels and threads".
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import exprvm as ev  # noqa: E402
from text_data import Streams, Vocab, load_text  # noqa: E402

F32 = np.float32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", help="training text file (default: Python stdlib source, ~1 MB)")
    p.add_argument("--cell", choices=sorted(ev.nn.CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seq", type=int, default=25, help="time steps per batch")
    p.add_argument("--unroll", action="store_true",
                   help="one graph step per time step (default: the recurrence as one ev.scan loop)")
    p.add_argument("--batch", type=int, default=32, help="parallel streams")
    p.add_argument("--steps", type=int, help="train this many more steps")
    p.add_argument("--minutes", type=float, help="train this long (default 1 if no --steps)")
    p.add_argument("--lr", type=float, default=4e-3, help="the peak lr (see --decay)")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip")
    p.add_argument("--decay", choices=["cosine", "none"], default="cosine",
                   help="cosine: the lr falls along half a cosine to --min-lr over the run's budget "
                        "(the --minutes by the clock, else the --steps)")
    p.add_argument("--min-lr", type=float, default=None, help="the lr at the budget's end (default lr/10)")
    p.add_argument("--machine", choices=["tape", "lisp"],
                   default="tape" if hasattr(ev, "TapeMachine") else "lisp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, default=300, help="characters to sample at the end (0: none)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--checkpoint", help="resume from this file if it exists; save to it")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--print-every", type=int, default=500)
    p.add_argument("--out", default="out", help="folder for the default --plot and --svg")
    p.add_argument("--plot", help="loss-curve PNG (default OUT/loss.png; '' for none)")
    p.add_argument("--svg", help="one time step with gradients (default OUT/char_rnn_step.svg; '' for none)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few steps, for tests")
    p.add_argument("--device", choices=["cpu", "cuda", "twin"], default="cpu",
                   help="cuda: the compiled step and Adam on a GPU; twin: the same device "
                        "program on the CPU's host twin of the CUDA code (slow; a check)")
    p.add_argument("--distributed", action="store_true",
                   help="data parallel over MPI: run under mpirun -n N (needs exprvm[mpi]); "
                        "--batch is per rank")
    a = p.parse_args(argv)
    if a.smoke:
        a.hidden, a.seq, a.batch = min(a.hidden, 16), min(a.seq, 8), min(a.batch, 4)
        a.steps = 30 if a.steps is None else a.steps
        a.sample, a.print_every, a.lr = min(a.sample, 40), 1, max(a.lr, 3e-2)
    if a.steps is None and a.minutes is None:
        a.minutes = 1.0
    if a.device != "cpu":
        a.unroll = True         # NOTE: loops run on the host; the device step is unrolled
    a.plot = os.path.join(a.out, "loss.png") if a.plot is None else a.plot
    a.svg = os.path.join(a.out, "char_rnn_step.svg") if a.svg is None else a.svg
    if a.device != "cpu" and a.machine != "tape":
        p.error(f"--device {a.device} compiles the step: use --machine tape")
    if a.machine == "tape" and not hasattr(ev, "TapeMachine"):
        p.error("--machine tape: this exprvm has no TapeMachine yet; use --machine lisp")
    return a


class CharModel(ev.nn.Module):
    """Ids -> stacked recurrent cells (one-hot input via a row gather) -> linear head."""

    def __init__(self, vocab, cell, hidden, layers, seed):
        super().__init__("char")
        self.rnn = self.add(ev.nn.StackedRNN(cell, vocab, hidden, layers, name=cell, dtype=F32, seed=(seed, 0)))
        self.head = self.add(ev.nn.Linear(hidden, vocab, name="head", dtype=F32, seed=(seed, 1)))

    def sequence(self, g, T, B, unroll=False):
        """Inputs, the mean loss and the final state of T steps of B streams in g: the
        recurrence as one ev.scan (unroll=True: one graph step per time step)."""
        ids = g.tensor("ids", (T, B), np.int32)
        targets = g.tensor("targets", (T, B), np.int32)
        state0 = self.rnn.state_inputs(g, B)
        hs, final = self.rnn.sequence(ids, state0, unroll=unroll)
        # One big output matmul over all steps.
        loss = ev.nn.mean_cross_entropy(self.head(hs), targets)
        return ids, targets, state0, loss, final


def make_machine(kind, g, loss=None, outputs=(), comm=None, device=None):
    """A machine that computes `outputs` (and the parameters' gradients, given a loss;
    averaged over the ranks of comm, an ev.distributed Context, when given)."""
    if kind == "tape":
        return ev.TapeMachine(g, outputs=([loss] if loss is not None else []) + list(outputs), comm=comm,
                              device=device)
    return ev.LispMachine(g, cost=loss, outputs=list(outputs), comm=comm)


class Sampler:
    """`n` characters drawn in ONE run: an ev.fori_loop feeding each drawn character back
    (ev.random.categorical draws from the softmax), built and compiled once."""

    def __init__(self, model, kind, temperature, n, seed):
        g = ev.Graph("sampler")
        self.start = g.scalar("start", np.int64)
        state = [tuple(g.constant(z) for z in layer) for layer in model.rnn.zero_state(1)]
        positions = g.constant(np.arange(n, dtype=np.int64))
        draws = np.random.default_rng(seed)

        def body(i, carry):
            c, state, out = carry
            h, state = model.rnn(ev.reshape(c, (1,)), state)
            c = ev.random.categorical(model.head(h) / float(temperature), seed=draws)[0]
            return c, state, ev.where(ev.equal(positions, i), c, out)

        _, _, self.codes = ev.fori_loop(0, n, body, (self.start, state, np.zeros(n, np.int64)))
        self.m = make_machine(kind, g, outputs=[self.codes])

    def sample(self, vocab, start="\n"):
        self.m.run({self.start: np.array(vocab.index.get(start, 0))})
        return vocab.decode([int(c) for c in self.codes.value])


def progress(done, steps, elapsed, budget):
    """How far through the run's budget (the --steps, the --minutes, whichever ends
    first): 1 or more means stop."""
    parts = []
    if steps is not None:
        parts.append(done / steps if steps else 1.0)
    if budget is not None:
        parts.append(elapsed / budget)
    return max(parts, default=1.0)


def decayed_lr(args, frac):
    """The lr at fraction `frac` of the run's budget: --lr along half a cosine to --min-lr
    (with --decay cosine; the whole budget at --lr with --decay none)."""
    if args.decay == "none":
        return args.lr
    low = args.lr / 10 if args.min_lr is None else args.min_lr
    return low + (args.lr - low) * (1 + math.cos(math.pi * frac)) / 2


class Smoother:
    """Bias-corrected exponential moving average of the loss (about 100 steps wide)."""

    def __init__(self, beta=0.99):
        self.beta, self.ema, self.n = beta, 0.0, 0

    def add(self, x):
        self.n += 1
        self.ema = self.beta * self.ema + (1 - self.beta) * x
        return self.value

    @property
    def value(self):
        return self.ema / (1 - self.beta ** self.n) if self.n else float("nan")


def state_arrays(state0, feeds):
    return {n.name: feeds[n] for ins in state0 for n in ins}


def save_checkpoint(path, model, opt, state0, feeds, streams, smooth, losses, vocab, args, step, ctx=None):
    meta = {"step": step, "pos": streams.pos, "epoch": streams.epoch, "ema": smooth.ema,
            "ema_n": smooth.n, "vocab": vocab.codes(), "losses": np.asarray(losses, F32),
            "config": f"{args.cell} hidden={args.hidden} layers={args.layers} "
                      f"batch={args.batch} seq={args.seq}"}
    state = state_arrays(state0, feeds)
    if ctx is None:
        ev.save(path, model, solver=opt.state_dict(), state=state, meta=meta)
        return
    # NOTE: each rank carries its own streams' hidden state; rank 0 writes every rank's.
    every = ctx.comm.gather(state, root=0)
    if ctx.is_root:
        state = {f"rank{r}/{k}": v for r, st in enumerate(every) for k, v in st.items()}
    meta["ranks"] = ctx.size
    ctx.save(path, model, solver=opt.state_dict(), state=state, meta=meta)


def resume(path, model, opt, state0, feeds, streams, smooth, vocab, args, ctx=None):
    """Restore everything save_checkpoint wrote; returns (step, losses, carried): carried
    is False when the streams restart (a checkpoint of another number of ranks)."""
    ck = ev.load(path) if ctx is None else ctx.load(path)
    meta = ck.section("meta")
    config = (f"{args.cell} hidden={args.hidden} layers={args.layers} "
              f"batch={args.batch} seq={args.seq}")
    if str(meta["config"]) != config:
        raise SystemExit(f"{path} was trained as {meta['config']}, not {config}")
    if not np.array_equal(meta["vocab"], vocab.codes()):
        raise SystemExit(f"{path} was trained on a text with another alphabet")
    ev.load(path, model)
    opt.load_state_dict(ck.section("solver"), model.params())
    smooth.ema, smooth.n = float(meta["ema"]), int(meta["ema_n"])
    saved_ranks = int(meta["ranks"]) if "ranks" in meta else None
    carried = saved_ranks == (None if ctx is None else ctx.size)
    if carried:     # the same parts of the text: every stream continues where it was
        saved, prefix = ck.section("state"), "" if ctx is None else f"rank{ctx.rank}/"
        for ins in state0:
            for n in ins:
                feeds[n] = np.array(saved[prefix + n.name], dtype=n.dtype)
        streams.pos, streams.epoch = int(meta["pos"]), int(meta["epoch"])
    return int(meta["step"]), list(meta["losses"].astype(float)), carried


def plot_losses(path, losses, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sm, curve = Smoother(), []
    for x in losses:
        curve.append(sm.add(x))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(losses) + 1), losses, color="0.8", lw=0.7, label="batch loss")
    ax.plot(np.arange(1, len(losses) + 1), curve, color="C0", lw=1.5, label="smoothed")
    ax.set(xlabel="step", ylabel="nats / char",
           title=f"char-RNN: {args.cell}, hidden {args.hidden}, {args.layers} layer(s), {args.machine}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_step(path, model, batch):
    """Draw one unrolled step of the model with its gradient nodes."""
    if not hasattr(ev, "render"):
        print("(no ev.render in this exprvm: skipping the SVG)")
        return
    g = ev.Graph("one step")
    _, _, _, loss, _ = model.sequence(g, 1, batch, unroll=True)
    ev.grad(loss, model.nodes(g))
    try:
        ev.render(g, path)
        print(f"wrote {path}")
    except ev.ExprError as e:
        print(f"could not draw the graph: {e}")


def my_part(data, ctx):
    """This rank's contiguous part of the encoded text (all of it without ctx). Every part
    has the same length, so every rank's streams wrap at the same step."""
    if ctx is None:
        return data
    n = (len(data) - 1) // ctx.size
    return data[ctx.rank * n:(ctx.rank + 1) * n + 1]


def train(args, ctx=None):
    from tqdm import tqdm

    root = ctx is None or ctx.is_root
    say = print if root else (lambda *a, **k: None)
    ev.init.seed(args.seed)
    text, where = load_text(args.text)
    vocab = Vocab(text)
    data = my_part(vocab.encode(text), ctx)
    streams = Streams(data, args.batch, args.seq)
    model = CharModel(len(vocab), args.cell, args.hidden, args.layers, args.seed)
    say(f"text: {where}, {len(vocab)} distinct chars; model: {args.layers}x{args.cell} "
        f"hidden {args.hidden}, {model.num_parameters():,} parameters; machine: {args.machine}")
    if ctx is not None:
        ctx.broadcast(model)    # the same start everywhere (refused if the ranks' models differ)
        say(f"data parallel: {ctx.size} ranks, each on its own {len(data):,} chars, batch {args.batch} "
            f"per rank ({args.batch * ctx.size} in all)")

    g = ev.Graph("char_rnn")
    ids, targets, state0, loss, final = model.sequence(g, args.seq, args.batch, unroll=args.unroll)
    params = model.nodes(g)
    if args.machine == "tape":
        ev.grad(loss, params)
    t0 = time.perf_counter()
    m = make_machine(args.machine, g, loss, ev.nn.flat(final), comm=ctx,
                     device="cuda" if args.device in ("cuda", "twin") else None)
    say(f"graph: {len(g.nodes)} nodes; machine ready in {time.perf_counter() - t0:.2f} s")

    opt = ev.solvers.Adam(lr=args.lr, clip_norm=args.clip)
    feeds = {}
    zero = model.rnn.zero_state(args.batch)
    smooth, losses, step = Smoother(), [], 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        step, losses, carried = resume(args.checkpoint, model, opt, state0, feeds, streams, smooth,
                                       vocab, args, ctx)
        say(f"resumed from {args.checkpoint} at step {step}"
            + ("" if carried else " (saved on another number of ranks: the streams start afresh)"))
    first_step = step

    budget = None if args.minutes is None else args.minutes * 60.0
    bar = tqdm(total=args.steps, unit="step", mininterval=1.0, file=sys.stderr, dynamic_ncols=True,
               disable=not root)
    start = time.perf_counter()
    try:
        while True:
            done = step - first_step
            elapsed = time.perf_counter() - start
            if ctx is not None and budget is not None:
                # NOTE: one clock for all ranks: they stop at the same step (or they hang)
                # and take the same lr (or their parameters part).
                elapsed = ctx.max(elapsed)
            frac = progress(done, args.steps, elapsed, budget)
            if frac >= 1:
                break
            opt.lr = decayed_lr(args, frac)
            x, y, reset = streams.next()
            if reset:
                for ins, vals in zip(state0, zero):
                    feeds.update(zip(ins, vals))
            feeds[ids], feeds[targets] = x, y
            m.run(feeds)
            value = float(loss.value) if ctx is None else ctx.mean(float(loss.value))
            if not math.isfinite(value):
                raise SystemExit(f"step {step + 1}: loss is {value}; try a smaller --lr")
            opt.step(model.collect_grads(g))
            feeds.update(ev.nn.StackedRNN.carry(state0, final))
            step += 1
            losses.append(value)
            smooth.add(value)
            bar.update(1)
            if step % args.print_every == 0 and root:
                bar.set_postfix(loss=f"{smooth.value:.3f}")
                bar.write(f"step {step} loss {smooth.value:.4f} ({time.perf_counter() - start:.0f} s)")
            if args.checkpoint and step % args.save_every == 0:
                save_checkpoint(args.checkpoint, model, opt, state0, feeds, streams, smooth, losses,
                                vocab, args, step, ctx)
    except KeyboardInterrupt:
        if ctx is not None:     # NOTE: the other ranks wait in a collective: end the whole job
            raise
        # NOTE: Ctrl-C ends training, not the program: the checkpoint, sample and plot still follow.
        bar.write(f"interrupted at step {step}")
    bar.close()
    elapsed = time.perf_counter() - start
    done = step - first_step
    if done:
        k = max(1, min(10, done // 3))
        run = losses[-done:]
        chars = done * args.seq * args.batch * (1 if ctx is None else ctx.size)
        say(f"{done} steps in {elapsed:.1f} s ({1000 * elapsed / done:.1f} ms/step, "
            f"{chars / elapsed:,.0f} chars/s), epoch {streams.epoch}, "
            f"smoothed loss {smooth.value:.4f} nats/char")
        say(f"loss first {np.mean(run[:k]):.4f} last {np.mean(run[-k:]):.4f}")
    if args.checkpoint:
        save_checkpoint(args.checkpoint, model, opt, state0, feeds, streams, smooth, losses, vocab, args,
                        step, ctx)
        say(f"saved {args.checkpoint} at step {step}")
    if args.device != "cpu":
        from exprvm.train import device as device_params
        device_params.to_host()     # the model's host arrays get the trained values (sampling)
        m.close()
    return model, vocab, losses


def main(argv=None):
    args = parse_args(argv)
    ctx = ev.distributed.init() if args.distributed else None
    if args.device == "twin":
        from exprvm.device import twin
        with twin.use():
            model, vocab, losses = train(args, ctx)
    else:
        model, vocab, losses = train(args, ctx)
    if ctx is not None and not ctx.is_root:
        return                  # rank 0 samples, plots and draws
    if args.sample:
        sampler = Sampler(model, args.machine, args.temperature, args.sample, args.seed)
        text = sampler.sample(vocab)
        print(f"--- sample ({args.sample} chars, temperature {args.temperature}) ---")
        print(text)
        print("---")
    for path in (args.plot, args.svg):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    if args.plot and losses:
        plot_losses(args.plot, losses, args)
        print(f"wrote {args.plot}")
    if args.svg:
        render_step(args.svg, model, 2)


if __name__ == "__main__":
    main()
