"""The Trainer's extensions: LogReport (JSON lines, printed lines, moving averages),
PlotReport (a PNG), ProgressBar (tqdm, off when not a terminal), Evaluator (evaluation
mode, weighted means) and LRSchedule."""
import io
import json

import numpy as np
import pytest

import exprvm as ev

T = ev.train
F32 = np.float32


def loader(n=40, batch=8, shuffle=False):
    X = np.arange(n * 2, dtype=F32).reshape(n, 2)
    return ev.data.DataLoader(ev.data.ArrayDataset(X, np.arange(n) % 3), batch_size=batch, shuffle=shuffle, seed=0)


def counting(trainer_box):
    """A step whose loss is the number of the step (1, 2, ...) and whose 'half' is half of it."""
    def step(x, y):
        k = trainer_box[0].step + 1
        return {"loss": float(k), "half": k / 2}
    return step


def test_log_report_writes_the_means_of_each_interval_as_json_lines(tmp_path, capsys):
    box = []
    t = T.Trainer(loader(), counting(box), steps=12)
    box.append(t)
    path = tmp_path / "log.jsonl"
    log = t.extend(T.LogReport(path, trigger=(4, "steps"), smooth=0.5,
                               print="step {step} loss {loss:.1f} half {half} ~{loss_smoothed:.3f}"))
    t.run()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == log.log and [e["step"] for e in lines] == [4, 8, 12]
    assert [e["loss"] for e in lines] == [2.5, 6.5, 10.5] and [e["half"] for e in lines] == [1.25, 3.25, 5.25]
    assert [e["epoch"] for e in lines] == [0, 1, 2]                 # 5 batches an epoch
    ema, n = 0.0, 0                                                   # bias-corrected, decay 0.5
    for k in range(1, 9):
        ema, n = 0.5 * ema + 0.5 * k, n + 1
    assert lines[1]["loss_smoothed"] == pytest.approx(ema / (1 - 0.5 ** n))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step 4 loss 2.5 half 1.25 ~3.267"
    t = T.Trainer(loader(), lambda x, y: 1.0, steps=2)
    t.extend(T.LogReport(trigger=(1, "steps"), print="{nope}"))
    with pytest.raises(ev.UsageError, match="does not fit the entry"):
        t.run()


def test_a_resumed_log_file_holds_the_entries_up_to_the_snapshot_then_goes_on(tmp_path):
    path, ck = tmp_path / "log.jsonl", tmp_path / "ck.npz"

    def run(steps, resume=None, crash=None):
        box = []
        t = T.Trainer(loader(), counting(box), steps=steps, resume=resume)
        box.append(t)
        t.extend(T.LogReport(path, trigger=(2, "steps")))
        t.extend(T.Snapshot(ck, trigger=(4, "steps")))
        if crash:
            t.extend(lambda tr: (_ for _ in ()).throw(RuntimeError("down")), trigger=lambda tr: tr.step == crash)
        t.run()
    with pytest.raises(RuntimeError):
        run(12, crash=7)                     # logged up to step 6, saved at step 4
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [2, 4, 6]
    run(12, resume=ck)
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["step"] for e in entries] == [2, 4, 6, 8, 10, 12]
    assert [e["loss"] for e in entries] == [1.5, 3.5, 5.5, 7.5, 9.5, 11.5]


def test_plot_report_draws_a_png_of_its_points_per_panel(tmp_path):
    box = []
    t = T.Trainer(loader(), counting(box), epochs=3)
    box.append(t)
    path = tmp_path / "figs" / "curves.png"
    plot = t.extend(T.PlotReport([["loss"], ["half", "missing"]], path, x="epoch", smooth=0.9, yscale=["log", None],
                                 title="curves"))
    t.run()
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert plot.points["x"] == [1, 2, 3] and plot.points["loss"] == [3.0, 8.0, 13.0]
    assert all(np.isnan(plot.points["missing"]))
    with pytest.raises(ev.UsageError, match="2 yscales for 1 panels"):
        T.PlotReport("loss", path, yscale=["log", "log"])
    with pytest.raises(ev.UsageError, match="x must be"):
        T.PlotReport("loss", path, x="hour")


def test_the_progress_bar_is_off_when_not_a_terminal(capsys):
    quiet = io.StringIO()
    t = T.Trainer(loader(), lambda x, y: 1.0, steps=5)
    t.extend(T.ProgressBar(file=quiet))
    t.run()
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    t = T.Trainer(loader(), lambda x, y: 0.25, steps=5)
    t.extend(T.ProgressBar(file=shown, enabled=True))
    t.extend(T.LogReport(trigger=(5, "steps"), print="done {step}"))
    t.run()
    text = shown.getvalue()
    assert "5/5" in text and "loss=0.25" in text
    assert "done 5" in capsys.readouterr().out      # through tqdm.write, which moves the bar aside


def bn_net():
    return ev.nn.Sequential(ev.nn.Conv2d(1, 4, 3, padding=1, bias=False, seed=0), ev.nn.BatchNorm2d(4), ev.relu,
                            ev.nn.Flatten(), ev.nn.Linear(64, 3, seed=1), name="net")


def images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 4, 4)).astype(F32), rng.integers(0, 3, n)


@pytest.mark.parametrize("machine", ["tape", "lisp"])
def test_the_evaluator_measures_in_evaluation_mode_with_weighted_means(machine):
    net = bn_net()
    X, Y = images(40, 0)
    Xv, Yv = images(13, 1)
    opt = ev.solvers.Adam(net, lr=1e-2)
    train = ev.data.DataLoader(ev.data.ArrayDataset(X, Y), batch_size=8)
    val = ev.data.DataLoader(ev.data.ArrayDataset(Xv, Yv), batch_size=5)       # 5, 5, 3
    t = T.Trainer(train, model=net, loss=ev.nn.mean_cross_entropy, optimizer=opt, machine=machine, epochs=2)
    rm = net["net.1.running_mean"].copy()
    evaluator = t.extend(T.Evaluator(val))
    t.run()
    assert not np.array_equal(net["net.1.running_mean"], rm)        # training moved the running statistics
    assert all(b.training for b in net.modules())               # and the training mode is back
    net.eval()
    g = ev.Graph()
    x, y = g.tensor("x", Xv.shape, F32), g.tensor("y", Yv.shape, np.int64)
    logits = net(x)
    loss = ev.nn.mean_cross_entropy(logits, y)
    want_loss, want_logits = ev.TapeMachine(g, outputs=[loss, logits]).run({x: Xv, y: Yv})
    net.train()
    assert evaluator.result["val/loss"] == pytest.approx(float(want_loss), rel=1e-5)
    assert evaluator.result["val/accuracy"] == pytest.approx(float(np.mean(want_logits.argmax(1) == Yv)))
    assert t.observation["val/loss"] == evaluator.result["val/loss"]


def test_an_evaluator_function_and_its_errors():
    t = T.Trainer(loader(), lambda x, y: 1.0, steps=5)
    ev_fn = t.extend(T.Evaluator(loader(12, batch=5), lambda x, y: {"rows": len(x), "mean": x.mean()},
                                 prefix="test", trigger="end"))
    t.run()
    X = np.arange(24, dtype=F32).reshape(12, 2)
    assert ev_fn.result == {"test/rows": pytest.approx((25 + 25 + 4) / 12), "test/mean": pytest.approx(X.mean())}
    t = T.Trainer(loader(), lambda x, y: 1.0, steps=1)
    t.extend(T.Evaluator(loader()), trigger="end")
    with pytest.raises(ev.UsageError, match="give fn="):
        t.run()


def test_lr_schedule_sets_the_rate_of_every_step():
    net = ev.nn.Linear(2, 3, seed=0, dtype=F32)
    opt = ev.solvers.SGD(net, lr=0.1)
    seen = []

    @ev.function
    def step(x, y):
        loss = ev.nn.mean_cross_entropy(net(x), y)
        ev.grad(loss, net)
        return loss

    def recording(x, y):
        seen.append(opt.lr)
        return step(x, y)
    sched = ev.schedules.StepDecay(0.1, step_size=3, gamma=0.5)
    t = T.Trainer(loader(), recording, optimizer=opt, steps=8)
    t.extend(T.LRSchedule(sched))
    t.run()
    assert seen == [sched(k) for k in range(8)]
    seen.clear()
    t = T.Trainer(loader(), recording, optimizer=opt, epochs=2)
    t.extend(T.LRSchedule(lambda tr: 0.2 * (1 - tr.progress)))
    t.run()
    assert seen == pytest.approx([0.2 * (1 - k / 10) for k in range(10)])
    seen.clear()
    t = T.Trainer(loader(), recording, optimizer=opt, epochs=2)
    t.extend(T.LRSchedule(ev.schedules.ExponentialDecay(0.1, 0.5), unit="epochs"))
    t.run()
    assert seen == [0.1] * 5 + [0.05] * 5
    t = T.Trainer(loader(), recording, optimizer=ev.solvers.SGD(net, lr=sched), steps=1)
    t.extend(T.LRSchedule(sched))
    with pytest.raises(ev.UsageError, match="follows its own schedule"):
        t.run()
    t = T.Trainer(loader(), recording, optimizer=opt, steps=1)
    t.extend(T.LRSchedule(lambda tr: float("nan")))
    with pytest.raises(ev.UsageError, match="gave the learning rate nan for step 1"):
        t.run()
