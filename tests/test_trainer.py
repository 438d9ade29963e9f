"""ev.train.Trainer: the step over a loader for a budget, triggers, the optimizer it
steps, the stop on a non-finite loss, Ctrl-C, and snapshots that resume a run stopped
mid-epoch (or crashed) to the very parameters of an uninterrupted run."""
import os

import numpy as np
import pytest

import exprvm as ev

T = ev.train
F32 = np.float32


def data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(F32)
    return X, ((X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5))


def setup(batch=16, noise=True):
    """A model, Adam with two hooks (one of them random), a shuffled prefetching loader."""
    net = ev.nn.Sequential(ev.nn.Linear(4, 16, seed=0, dtype=F32), ev.tanh, ev.nn.Linear(16, 3, seed=1, dtype=F32))
    opt = ev.solvers.Adam(net, lr=1e-2, clip_norm=5.0)
    if noise:
        opt.add_hook(ev.solvers.hooks.GradientNoise(1e-3, seed=7))
    X, Y = data()
    loader = ev.data.DataLoader(ev.data.ArrayDataset(X, Y), batch_size=batch, shuffle=True, seed=3)
    return net, opt, loader


def values(net):
    return {k: net[k].copy() for k in net}


def traced_step(net):
    @ev.function
    def step(x, y):
        loss = ev.nn.mean_cross_entropy(net(x), y)
        ev.grad(loss, net)
        return loss
    return step


def lisp_step(net):
    def step(x, y):        # walked every time: no replay, so every run rounds alike
        g = ev.Graph()
        xn, yn = g.tensor("x", x.shape, x.dtype), g.tensor("y", y.shape, y.dtype)
        loss = ev.nn.mean_cross_entropy(net(xn), yn)
        return ev.LispMachine(g, cost=loss, replay=False).run({xn: x, yn: y})[0]
    return step


def make(form, net, opt, loader, **kw):
    if form == "model":
        return T.Trainer(loader, model=net, loss=ev.nn.mean_cross_entropy, optimizer=opt, **kw)
    if form == "lisp-model":
        return T.Trainer(loader, model=net, loss=ev.nn.mean_cross_entropy, optimizer=opt, machine="lisp", **kw)
    step = traced_step(net) if form == "function" else lisp_step(net)
    return T.Trainer(loader, step, model=net, optimizer=opt, **kw)


# -- the loop ---------------------------------------------------------------------------

def test_both_machines_train_the_model_alike():
    runs = {}
    for machine in ("tape", "lisp"):
        net, opt, loader = setup()
        t = T.Trainer(loader, model=net, loss=ev.nn.mean_cross_entropy, optimizer=opt, machine=machine, epochs=4)
        log = t.extend(T.LogReport())
        t.run()
        assert (t.step, t.epoch, t.position) == (4 * len(loader), 4, 0) and t.completed
        runs[machine] = values(net), [e["loss"] for e in log.log]
    for k in runs["tape"][0]:
        np.testing.assert_allclose(runs["tape"][0][k], runs["lisp"][0][k], rtol=1e-4, atol=1e-6)
    losses = runs["tape"][1]
    assert losses[-1] < 0.8 * losses[0]
    np.testing.assert_allclose(losses, runs["lisp"][1], rtol=1e-4)


def test_a_traced_step_trains_as_the_loop_written_by_hand():
    net, opt, loader = setup()
    T.Trainer(loader, traced_step(net), optimizer=opt, epochs=2).run()
    by_hand, opt2, loader2 = setup()
    step = traced_step(by_hand)
    for _ in range(2):
        for xb, yb in loader2:
            step(xb, yb)
            opt2.step()
    for k in by_hand:
        np.testing.assert_array_equal(net[k], by_hand[k])


def test_budgets_the_first_reached_ends_the_run():
    net, opt, loader = setup()
    t = make("function", net, opt, loader, epochs=3, steps=8)
    t.run()
    assert (t.step, t.epoch, t.position) == (8, 1, 8 - len(loader))
    t = T.Trainer(loader, lambda x, y: 1.0, epochs=2)
    t.run()
    assert t.step == 2 * len(loader) and t.progress == 1.0

    def slow(x, y):
        import time
        time.sleep(0.02)
        return 1.0
    t = T.Trainer(loader, slow, steps=10 ** 6, minutes=0.1 / 60)
    t.run()
    assert 1 <= t.step < 10 ** 6 and t.elapsed >= 0.1 and t.progress == 1.0


def test_triggers_fire_on_steps_epochs_lists_and_at_the_end_once():
    net, opt, loader = setup()
    n = len(loader)
    t = T.Trainer(loader, lambda x, y: 1.0, steps=2 * n + 2)
    fired = {k: [] for k in ("steps", "epochs", "end", "list", "asked")}
    t.extend(lambda tr: fired["steps"].append(tr.step), trigger=(4, "steps"))
    t.extend(lambda tr: fired["epochs"].append(tr.step), trigger=(1, "epoch"))
    t.extend(lambda tr: fired["end"].append(tr.step), trigger="end")
    t.extend(lambda tr: fired["list"].append(tr.step), trigger=[(5, "steps"), "end"], name="listed")
    t.extend(lambda tr: fired["asked"].append(tr.step), trigger=lambda tr: tr.step in (1, 3))
    t.run()
    total = 2 * n + 2
    assert fired["steps"] == list(range(4, total + 1, 4))
    assert fired["epochs"] == [n, 2 * n]
    assert fired["end"] == [total] and fired["asked"] == [1, 3]
    assert fired["list"] == list(range(5, total + 1, 5)) + ([] if total % 5 == 0 else [total])
    assert "listed" in t.extensions and list(t.extensions)[0] == "<lambda>"


class NoLen:
    """Batches from a list, iterable again and again, with no len(): an epoch ends when
    the iteration does."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_an_epoch_of_a_loader_without_len_ends_with_its_iteration():
    X, Y = data(12)
    ends = []
    t = T.Trainer(NoLen([(X[:6], Y[:6]), (X[6:], Y[6:])]), lambda x, y: 1.0, epochs=3)
    t.extend(lambda tr: ends.append((tr.step, tr.epoch)), trigger=(1, "epoch"))
    t.run()
    assert ends == [(2, 1), (4, 2), (6, 3)] and t.step == 6
    with pytest.raises(ev.UsageError, match="gave no batch in epoch 1"):
        T.Trainer(NoLen([]), lambda x, y: 1.0, epochs=1).run()


def test_observations_are_the_steps_numbers():
    net, opt, loader = setup()
    seen = []
    t = T.Trainer(loader, lambda x, y: {"loss": np.float32(2.5), "rows": len(x)}, steps=3)
    t.extend(lambda tr: seen.append(dict(tr.observation)), trigger=(1, "steps"))
    t.run()
    assert seen[0] == {"loss": 2.5, "rows": 16.0}
    for bad in (np.ones(3), "x", {"loss": np.ones(2)}):
        with pytest.raises(ev.UsageError, match="a step returns a number"):
            T.Trainer(loader, lambda x, y, bad=bad: bad, steps=1).run()


def test_a_non_finite_loss_stops_the_run_naming_the_step_before_the_optimizer_moves():
    net, opt, loader = setup(noise=False)

    @ev.function
    def step(x, y, scale):
        loss = ev.nn.mean_cross_entropy(net(x), y) * scale
        ev.grad(loss, net)
        return loss
    calls = []

    def scaled(x, y):
        calls.append(1)
        return step(x, y, np.array(np.nan if len(calls) == 3 else 1.0, F32))
    after = []
    t = T.Trainer(loader, scaled, optimizer=opt, steps=10)
    t.extend(lambda tr: after.append(values(net)), trigger=(1, "steps"))
    with pytest.raises(ev.NonFiniteLossError, match=r"step 3 \(batch 3 of epoch 1\): the loss is nan") as e:
        t.run()
    assert (e.value.step, e.value.epoch) == (3, 1) and np.isnan(e.value.loss)
    assert isinstance(e.value, ev.NumericError) and t.step == 2 and not t.completed
    for k in net:                                       # step 3 moved nothing
        np.testing.assert_array_equal(net[k], after[-1][k])
    assert opt.steps == 2


def test_ctrl_c_stops_the_run_and_runs_the_end_extensions(tmp_path):
    net, opt, loader = setup()
    step = traced_step(net)
    calls = []

    def interrupted(x, y):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return step(x, y)
    t = make("function", net, opt, loader, steps=20)
    t.step_fn = interrupted
    ends = []
    t.extend(lambda tr: ends.append(tr.step), trigger="end")
    t.extend(T.Snapshot(tmp_path / "ck.npz", trigger="end"))
    t.run()
    assert t.interrupted and t.step == 4 and ends == [4]
    ck = ev.load(tmp_path / "ck.npz")
    assert int(ck.section("trainer")["step"]) == 4
    assert int(ck.section("loader")["position"]) == 4     # the batch of the interrupted step: not trained on
    calls.clear()
    t = T.Trainer(loader, interrupted, steps=20, interrupt="raise")
    with pytest.raises(KeyboardInterrupt):
        t.run()


def test_usage_errors_say_what_to_pass():
    net, opt, loader = setup()
    cases = [
        (lambda: T.Trainer(loader, lambda x, y: 1.0), "give a budget"),
        (lambda: T.Trainer(loader, model=net, steps=1), "what to train"),
        (lambda: T.Trainer(loader, model=net, loss=ev.nn.mean_cross_entropy, steps=1), "need an optimizer"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, loss=ev.nn.mse, steps=1), "not both"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, optimizer=ev.solvers.SGD(lr=0.1), steps=1),
         "give the optimizer its parameters"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, machine="lisp", steps=1), "model-and-loss form"),
        (lambda: T.Trainer(3, lambda x, y: 1.0, steps=1), "must be iterable"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, steps=0), "steps= must be an int > 0"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, minutes=-1), "minutes= must be a number > 0"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, steps=1).extend(lambda t: 0, trigger=(0, "steps")),
         "interval must be an int > 0"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, steps=1).extend(lambda t: 0, trigger=(1, "hours")),
         "'steps' or 'epochs'"),
        (lambda: T.Trainer(loader, lambda x, y: 1.0, steps=1).extend(3), "called with the trainer"),
        (lambda: T.Trainer(loader, model=net, loss=ev.nn.mse, optimizer=opt, machine="jit", steps=1),
         "machine must be one of"),
    ]
    for make_it, said in cases:
        with pytest.raises(ev.UsageError, match=said):
            make_it()
    t = T.Trainer(loader, lambda x, y: 1.0, steps=1)
    t.run()
    with pytest.raises(ev.UsageError, match="runs once"):
        t.run()
    with pytest.raises(ev.UsageError, match="extend before run"):
        t.extend(lambda tr: 0)

    def steps_itself(x, y):
        traced_step(net)(x, y)
        opt.step()
        return 1.0
    with pytest.raises(ev.UsageError, match="stepped Adam itself"):
        T.Trainer(loader, steps_itself, optimizer=opt, steps=2).run()


# -- snapshots and resume ---------------------------------------------------------------

def run_from(form, budget, path=None, resume=None, every=None, fail_at=None):
    """A fresh model, optimizer and loader trained by `form` with a log, a plot, an lr
    schedule and a snapshot; returns (net, opt, trainer, log, plot)."""
    net, opt, loader = setup()
    t = make(form, net, opt, loader, resume=resume, **budget)
    if fail_at is not None:
        inner = t.step_fn

        def failing(*batch):
            if t.step + 1 == fail_at:
                raise RuntimeError("the machine went down")
            return inner(*batch)
        t.step_fn = failing
    t.extend(T.LRSchedule(ev.schedules.CosineDecay(1e-2, 40)))
    log = t.extend(T.LogReport(trigger=(2, "steps"), smooth=0.9))
    plot = t.extend(T.PlotReport("loss", os.devnull, x="step", trigger=(1, "steps")))
    if path is not None:
        t.extend(T.Snapshot(path, trigger=every or "end"))
    t.run()
    return net, opt, t, log, plot


def same_runs(a, b):
    (net_a, opt_a, t_a, log_a, plot_a), (net_b, opt_b, t_b, log_b, plot_b) = a, b
    for k in net_a:
        np.testing.assert_array_equal(net_a[k], net_b[k], err_msg=k)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert (t_a.step, t_a.epoch) == (t_b.step, t_b.epoch)
    assert [{k: v for k, v in e.items() if k != "elapsed"} for e in log_a.log] == \
           [{k: v for k, v in e.items() if k != "elapsed"} for e in log_b.log]
    assert plot_a.points == plot_b.points
    assert next(iter(t_a.loader))[1].tolist() == next(iter(t_b.loader))[1].tolist()


@pytest.mark.parametrize("form", ["model", "function", "lisp-function"])
def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_parameters(tmp_path, form):
    whole = run_from(form, {"epochs": 4})
    n = len(whole[2].loader)
    first = run_from(form, {"steps": n + 3}, path=tmp_path / "ck.npz")        # mid-epoch 2
    assert (first[2].step, first[2].position) == (n + 3, 3)
    resumed = run_from(form, {"epochs": 4}, path=tmp_path / "ck2.npz", resume=tmp_path / "ck.npz")
    assert resumed[2].start_step == n + 3 and resumed[2].same_ranks
    same_runs(whole, resumed)


def test_a_crashed_run_resumes_from_its_last_snapshot(tmp_path):
    whole = run_from("model", {"steps": 17})
    with pytest.raises(RuntimeError, match="went down"):
        run_from("model", {"steps": 17}, path=tmp_path / "ck.npz", every=(4, "steps"), fail_at=11)
    assert int(ev.load(tmp_path / "ck.npz").section("trainer")["step"]) == 8
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]                     # no temp file left
    same_runs(whole, run_from("model", {"steps": 17}, resume=tmp_path / "ck.npz"))


def test_the_lisp_model_step_resumes_to_rounding(tmp_path):
    # NOTE: the LispMachine walks a structure's first runs and replays the program compiled
    # for it after that; walked and replayed runs round differently in the last bits.
    whole = run_from("lisp-model", {"steps": 14})
    run_from("lisp-model", {"steps": 9}, path=tmp_path / "ck.npz")
    resumed = run_from("lisp-model", {"steps": 14}, resume=tmp_path / "ck.npz")
    for k in whole[0]:
        np.testing.assert_allclose(whole[0][k], resumed[0][k], rtol=1e-5, atol=1e-6)


def test_a_snapshot_is_one_plain_npz_with_every_part(tmp_path):
    path = tmp_path / "ck.npz"
    net, opt, t, log, plot = run_from("function", {"steps": 5}, path=path)
    with np.load(path, allow_pickle=False) as z:
        assert len(z.files) > 10
    ck = ev.load(path)
    assert set(ck) == set(net)
    assert {"optimizer", "loader", "trainer", "ext:LogReport", "ext:PlotReport"} <= set(ck.sections)
    assert "hook1:GradientNoise/rng" in ck.section("optimizer")       # the noise's stream
    assert int(ck.section("trainer")["ranks"]) == 1
    with pytest.raises(ev.UsageError, match="cannot say where it is"):
        T.Trainer(NoLen([(np.ones((2, 4), F32), np.zeros(2, np.int64))]), lambda x, y: 1.0, steps=1).save(
            tmp_path / "x.npz")


def test_a_failed_snapshot_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    run_from("model", {"steps": 3}, path=path)
    before = path.read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(ev.CheckpointError, match="disk full"):
        run_from("model", {"steps": 4}, path=path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_tracked_objects_and_the_steps_own_state_resume(tmp_path):
    class Counter:
        def __init__(self):
            self.calls = 0

        def __call__(self, x, y):
            self.calls += 1
            return float(rng.standard_normal())

        def state_dict(self):
            return {"calls": np.array(self.calls)}

        def load_state_dict(self, d):
            self.calls = int(d["calls"])
    _, _, loader = setup()
    rng = np.random.default_rng(5)
    t = T.Trainer(loader, Counter(), steps=4)
    t.track("rng", rng)
    t.extend(T.Snapshot(tmp_path / "ck.npz", trigger="end"))
    t.run()
    want = rng.standard_normal()
    rng = np.random.default_rng(99)
    t2 = T.Trainer(loader, Counter(), steps=5, resume=tmp_path / "ck.npz")
    t2.track("rng", rng)
    t2.run()
    assert t2.step_fn.calls == 5
    t3 = T.Trainer(loader, Counter(), steps=5, resume=tmp_path / "ck.npz")
    t3.track("rng", np.random.default_rng(1))
    probe = t3.tracked["rng"]
    t3.step_fn = lambda x, y: float(probe.standard_normal() == want)
    t3.run()
    assert t3.observation["loss"] == 1.0                # the stream went on where it was saved
    with pytest.raises(ev.UsageError, match="has no state_dict"):
        t3.track("x", object())
