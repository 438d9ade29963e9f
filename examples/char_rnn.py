"""Character-level language model: an RNN/LSTM/GRU learns to continue a text.

    python examples/char_rnn.py --minutes 1                  # stdlib source, no download
    python examples/char_rnn.py --text shakespeare.txt --cell lstm --minutes 5
    mpirun -n 2 python examples/char_rnn.py --distributed --minutes 1   # data parallel
    python examples/char_rnn.py --device cuda --minutes 1    # the training step on a GPU

The text is read as --batch parallel streams, --seq characters at a time
(ev.data.TextStreams): row b of a batch continues row b of the one before, so the final
hidden state of a batch is the initial state of the next (truncated backprop through
time), zeros again at each pass over the text. The step is traced once and compiled
(the recurrence one ev.scan loop, or unrolled with --unroll) or, with --machine lisp, a
fresh graph per batch; ev.train.Trainer drives it with Adam, whose lr falls from --lr
along half a cosine to --min-lr over the run's budget (by the clock for --minutes; on
tinyshakespeare, 5 minutes: 1.29 nats/char against 1.33 at a constant 4e-3). `step N
loss X` lines show a moving average of the loss in nats per character; the sample is
drawn in ONE run of a compiled ev.fori_loop. --checkpoint saves everything (the carried
state too) and resumes.

--distributed (under mpirun): every rank trains the same model on its own contiguous
part of the text, --batch streams per rank, the gradients averaged in the tape; rank 0
prints, samples, plots and writes the checkpoint, which resumes on any number of ranks.
"""
import argparse
import math
import os

import numpy as np

from common import Vocab, ev, load_text, on_device, to_host

F32 = np.float32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", help="training text file (default: Python stdlib source, ~1 MB)")
    p.add_argument("--cell", choices=sorted(ev.nn.CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seq", type=int, default=25, help="time steps per batch")
    p.add_argument("--unroll", action="store_true", help="one graph step per time step (default: one ev.scan)")
    p.add_argument("--batch", type=int, default=32, help="parallel streams")
    p.add_argument("--steps", type=int, help="train this many more steps")
    p.add_argument("--minutes", type=float, help="train this long (default 1 if no --steps)")
    p.add_argument("--lr", type=float, default=4e-3, help="the peak lr (see --decay)")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip")
    p.add_argument("--decay", choices=["cosine", "none"], default="cosine")
    p.add_argument("--min-lr", type=float, default=None, help="the lr at the budget's end (default lr/10)")
    p.add_argument("--machine", choices=["tape", "lisp"], default="tape")
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
                   help="cuda: the compiled step and Adam on a GPU; twin: that on the CPU's host twin (a check)")
    p.add_argument("--distributed", action="store_true", help="data parallel over MPI (run under mpirun -n N)")
    a = p.parse_args(argv)
    if a.smoke:
        a.hidden, a.seq, a.batch, a.sample = min(a.hidden, 16), min(a.seq, 8), min(a.batch, 4), min(a.sample, 40)
        a.steps, a.print_every, a.lr = 30 if a.steps is None else a.steps, 1, max(a.lr, 3e-2)
    a.minutes = 1.0 if a.steps is None and a.minutes is None else a.minutes
    a.unroll = a.unroll or a.device != "cpu"        # NOTE: loops run on the host; the device step is unrolled
    a.plot = os.path.join(a.out, "loss.png") if a.plot is None else a.plot
    a.svg = os.path.join(a.out, "char_rnn_step.svg") if a.svg is None else a.svg
    if a.device != "cpu" and a.machine != "tape":
        p.error(f"--device {a.device} compiles the step: use --machine tape")
    return a


class CharModel(ev.nn.Module):
    """Ids -> stacked recurrent cells (one-hot input via a row gather) -> linear head."""

    def __init__(self, vocab, cell, hidden, layers, seed):
        super().__init__("char")
        self.rnn = self.add(ev.nn.StackedRNN(cell, vocab, hidden, layers, name=cell, dtype=F32, seed=(seed, 0)))
        self.head = self.add(ev.nn.Linear(hidden, vocab, name="head", dtype=F32, seed=(seed, 1)))

    def loss(self, ids, targets, state, unroll=False):
        """(mean loss, final state) of (T, B) ids from `state`: the recurrence one ev.scan
        (or unrolled), the output layer one product over all steps."""
        hs, final = self.rnn.sequence(ids, state, unroll=unroll)
        return ev.nn.mean_cross_entropy(self.head(hs), targets), final

    def sequence(self, g, T, B, unroll=False):
        """Inputs, loss and final state of T steps of B streams in g."""
        ids, targets = g.tensor("ids", (T, B), np.int32), g.tensor("targets", (T, B), np.int32)
        state0 = self.rnn.state_inputs(g, B)
        return (ids, targets, state0) + self.loss(ids, targets, state0, unroll)


class CharStep:
    """One batch: the loss from the state each stream's previous batch ended in (the
    carry: this rank's, kept in snapshots), its gradients averaged over the ranks of ctx."""

    def __init__(self, model, args, ctx, device):
        self.model, self.args, self.ctx = model, args, ctx
        self.reset()

        def traced(ids, targets, state):
            loss, final = model.loss(ids, targets, state, args.unroll)
            ev.grad(loss, model)
            return loss, final
        self.traced = ev.function(traced, comm=ctx, device=device)

    def __call__(self, ids, targets):
        if self.args.machine == "tape":
            loss, final = self.traced(ids, targets, self.state)
        else:
            g = ev.Graph("char_rnn")
            x, y, state0, cost, out = self.model.sequence(g, *ids.shape, unroll=self.args.unroll)
            feeds = dict(zip([x, y] + ev.nn.flat(state0), [ids, targets] + ev.nn.flat(self.state)))
            ev.LispMachine(g, cost=cost, outputs=ev.nn.flat(out), comm=self.ctx).run(feeds)
            loss, final = cost.value, [[n.value for n in layer] for layer in out]
        self.state = [tuple(s) for s in final]
        return loss

    def reset(self, trainer=None):
        """Zeros: every stream starts the text again."""
        self.state = [tuple(s) for s in self.model.rnn.zero_state(self.args.batch)]

    def state_dict(self):
        return {f"layer{i}/{k}": a for i, s in enumerate(self.state) for k, a in enumerate(s)}

    def load_state_dict(self, d):
        self.state = [tuple(d[f"layer{i}/{k}"].astype(F32) for k in range(len(s))) for i, s in enumerate(self.state)]


def sample(model, args, vocab, start="\n"):
    """args.sample characters drawn in ONE run: an ev.fori_loop feeding each drawn character
    back (ev.random.categorical draws from the softmax)."""
    g, n = ev.Graph("sampler"), args.sample
    positions, draws = g.constant(np.arange(n, dtype=np.int64)), np.random.default_rng(args.seed)

    def body(i, carry):
        c, state, out = carry
        h, state = model.rnn(ev.reshape(c, (1,)), state)
        c = ev.random.categorical(model.head(h) / float(args.temperature), seed=draws)[0]
        return c, state, ev.where(ev.equal(positions, i), c, out)
    state = [tuple(g.constant(z) for z in layer) for layer in model.rnn.zero_state(1)]
    first = g.constant(np.array(vocab.index.get(start, 0), np.int64))
    _, _, codes = ev.fori_loop(0, n, body, (first, state, np.zeros(n, np.int64)))
    machine = ev.TapeMachine(g, outputs=[codes]) if args.machine == "tape" else ev.LispMachine(g, outputs=[codes])
    return vocab.decode(machine.run()[0])


def train(args, ctx, device):
    root = ctx is None or ctx.is_root
    say = print if root else (lambda *a, **k: None)
    text, where = load_text(args.text)
    vocab = Vocab(text)
    config = f"{args.cell} hidden={args.hidden} layers={args.layers} batch={args.batch} seq={args.seq}"
    model = CharModel(len(vocab), args.cell, args.hidden, args.layers, args.seed)
    say(f"text: {where}, {len(vocab)} distinct chars; model: {args.layers}x{args.cell} hidden {args.hidden}, "
        f"{model.num_parameters():,} parameters; machine: {args.machine}")
    streams = ev.data.TextStreams(vocab.encode(text), args.batch, args.seq, shard=ctx)
    if ctx is not None:
        say(f"data parallel: {ctx.size} ranks, each on its own {len(streams) * args.seq * args.batch:,} chars, "
            f"batch {args.batch} per rank ({args.batch * ctx.size} in all)")
    start, resume = 0, args.checkpoint and os.path.exists(args.checkpoint)
    if resume:
        ck = (ev.load if ctx is None else ctx.load)(args.checkpoint)
        meta, start = ck.section("meta"), int(ck.section("trainer")["step"])
        if str(meta["config"]) != config:
            raise SystemExit(f"{args.checkpoint} was trained as {meta['config']}, not {config}")
        if not np.array_equal(meta["vocab"], vocab.codes()):
            raise SystemExit(f"{args.checkpoint} was trained on a text with another alphabet")
    step = CharStep(model, args, ctx, device)
    # NOTE: a window is a slice of the text: made in the loop, no thread (prefetch=0)
    trainer = ev.train.Trainer(ev.data.DataLoader(streams, batch_size=None, prefetch=0), step, model=model, ctx=ctx,
                               optimizer=ev.solvers.Adam(model, lr=args.lr, clip_norm=args.clip),
                               steps=None if args.steps is None else start + args.steps, minutes=args.minutes)
    low = args.lr / 10 if args.min_lr is None else args.min_lr
    cosine = (lambda t: low + (args.lr - low) * (1 + math.cos(math.pi * t.progress)) / 2)
    trainer.extend(ev.train.LRSchedule(cosine if args.decay == "cosine" else (lambda t: args.lr)))
    trainer.extend(step.reset, trigger=(1, "epoch"), name="new pass")     # the streams start again
    history = trainer.extend(ev.train.LogReport(trigger=(1, "steps"), smooth=0.99, print=lambda e: (
        f"step {e['step']} loss {e['loss_smoothed']:.4f} ({e['elapsed']:.0f} s)"
        if e["step"] % args.print_every == 0 else None)), name="history")
    if args.plot:
        trainer.extend(ev.train.PlotReport("loss", args.plot, trigger=(1, "steps"), smooth=0.99, title=(
            f"char-RNN: {args.cell}, hidden {args.hidden}, {args.layers} layer(s), {args.machine}")))
    trainer.extend(ev.train.ProgressBar())
    if args.checkpoint:
        trainer.extend(ev.train.Snapshot(args.checkpoint, trigger=[(args.save_every, "steps"), "end"], sections={
            "meta": {"vocab": vocab.codes(), "config": config}}))
    if resume:
        trainer.resume(args.checkpoint)
        say(f"resumed from {args.checkpoint} at step {trainer.step}"
            + ("" if trainer.same_ranks else " (saved on another number of ranks: the streams start afresh)"))
    try:
        trainer.run()
    except ev.NonFiniteLossError as e:
        raise SystemExit(f"{e} (try a smaller --lr)") from None
    to_host(device)         # the model's host arrays get the trained values (for sampling)
    done, el = trainer.step - trainer.start_step, trainer.elapsed
    if done and root:       # NOTE: the reports run on rank 0
        losses, k = [e["loss"] for e in history.log[-done:]], max(1, min(10, done // 3))
        chars = done * args.seq * args.batch * (1 if ctx is None else ctx.size)
        say(f"{done} steps in {el:.1f} s ({1000 * el / done:.1f} ms/step, {chars / el:,.0f} chars/s), epoch "
            f"{trainer.epoch}, smoothed loss {history.log[-1]['loss_smoothed']:.4f} nats/char")
        say(f"loss first {np.mean(losses[:k]):.4f} last {np.mean(losses[-k:]):.4f}")
    if args.checkpoint:
        say(f"saved {args.checkpoint} at step {trainer.step}")
    return model, vocab


def main(argv=None):
    args = parse_args(argv)
    ctx = ev.distributed.init() if args.distributed else None
    device, where = on_device(args.device)
    with where:
        model, vocab = train(args, ctx, device)
    if ctx is not None and not ctx.is_root:
        return                  # rank 0 samples and draws
    if args.sample:
        print(f"--- sample ({args.sample} chars, temperature {args.temperature}) ---\n{sample(model, args, vocab)}\n---")
    if args.plot:
        print(f"wrote {args.plot}")
    if args.svg:                # one unrolled time step with its gradient nodes
        g = ev.Graph("one step")
        ev.grad(model.sequence(g, 1, 2, unroll=True)[3], model)
        os.makedirs(os.path.dirname(args.svg) or ".", exist_ok=True)
        try:
            ev.render(g, args.svg)
            print(f"wrote {args.svg}")
        except ev.ExprError as e:     # e.g. graphviz's dot missing
            print(f"could not draw the graph: {e}")


if __name__ == "__main__":
    main()
