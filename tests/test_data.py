"""ev.data: ArrayDataset, TextStreams and the DataLoader (order, shuffling, collation,
prefetching on a thread and its shutdown, sharding, resuming). Sharding under a real
mpirun is in test_distributed.py."""
import gc
import signal
import threading
import time

import numpy as np
import pytest

import exprvm as ev
from exprvm.data import ArrayDataset, DataLoader, TextStreams


def loader_threads():
    return [t for t in threading.enumerate() if t.name == "ev.data.DataLoader"]


@pytest.fixture(autouse=True)
def no_thread_left():
    yield
    for t in loader_threads():
        t.join(timeout=10)
    assert not loader_threads(), "a DataLoader thread outlived its test"


def data(n=10):
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.arange(n, dtype=np.int64) * 7


def as_lists(loader):
    return [tuple(np.array(f) for f in b) for b in loader]


# -- datasets ----------------------------------------------------------------------------

def test_array_dataset_samples_are_tuples_of_rows():
    X, Y = data()
    ds = ArrayDataset(X, Y)
    assert len(ds) == 10
    x, y = ds[3]
    np.testing.assert_array_equal(x, X[3])
    assert y == 21
    with pytest.raises(ev.ShapeError, match=r"lengths .* differ: \[10, 9\]"):
        ArrayDataset(X, Y[:9])
    with pytest.raises(ev.ShapeError, match="at least one"):
        ArrayDataset()
    with pytest.raises(ev.ShapeError, match="scalar"):
        ArrayDataset(np.float32(1.0))


def test_text_streams_continue_row_by_row():
    ids = np.arange(101, dtype=np.int32)
    ts = TextStreams(ids, batch=4, seq=5)
    assert len(ts) == 5                          # 25 steps a stream, 5 windows of 5
    x0, y0 = ts[0]
    x1, _ = ts[1]
    assert x0.shape == (5, 4) and x0.dtype == np.int32
    np.testing.assert_array_equal(x0[:, 1], np.arange(25, 30))      # stream 1 starts at 25
    np.testing.assert_array_equal(y0, x0 + 1)                       # targets: one step later
    np.testing.assert_array_equal(x1[0], x0[-1] + 1)                # item 1 continues item 0
    assert [b[0][0, 0] for b in DataLoader(ts, batch_size=None)] == [0, 5, 10, 15, 20]
    with pytest.raises(ev.ShapeError, match="cannot fill 4 streams"):
        TextStreams(ids[:20], batch=4, seq=5)
    with pytest.raises(ev.ExprError, match="read in order"):
        DataLoader(ts, batch_size=None, shuffle=True)
    with pytest.raises(IndexError):
        ts[5]


def test_text_streams_shard_the_text_into_equal_parts():
    ids = np.arange(1001, dtype=np.int32)

    class Rank:
        def __init__(self, rank):
            self.rank, self.size = rank, 3

    parts = [TextStreams(ids, batch=2, seq=4, shard=Rank(r)) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    firsts = [p[0][0][0, 0] for p in parts]
    assert firsts == [0, 333, 666]
    seen = [set(np.concatenate([p[i][0].ravel() for i in range(len(p))])) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


# -- batches -----------------------------------------------------------------------------

@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_batches_in_order_and_drop_last(prefetch):
    X, Y = data()
    batches = as_lists(DataLoader(ArrayDataset(X, Y), batch_size=4, prefetch=prefetch))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), X)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), Y)
    loader = DataLoader(ArrayDataset(X, Y), batch_size=4, drop_last=True, prefetch=prefetch)
    assert len(loader) == 2 and [len(y) for _, y in loader] == [4, 4]


def test_any_sequence_is_a_dataset_and_collate_stacks_fields():
    samples = [(np.full((2,), i, np.float64), i, {"k": np.array([i, -i])}) for i in range(5)]
    x, n, d = next(iter(DataLoader(samples, batch_size=3)))
    assert x.shape == (3, 2) and n.tolist() == [0, 1, 2] and d["k"].shape == (3, 2)
    # an ArrayDataset is gathered directly: the same batches as stacking its samples
    X, Y = data()
    direct = as_lists(DataLoader(ArrayDataset(X, Y), batch_size=3, shuffle=True, seed=5))
    stacked = as_lists(DataLoader([(X[i], Y[i]) for i in range(10)], batch_size=3, shuffle=True, seed=5))
    for a, b in zip(direct, stacked, strict=True):
        for fa, fb in zip(a, b):
            np.testing.assert_array_equal(fa, fb)
            assert fa.dtype == fb.dtype
    custom = DataLoader(samples, batch_size=2, collate=lambda s: len(s))
    assert list(custom) == [2, 2, 1]
    with pytest.raises(ev.ShapeError, match="different shapes"):
        list(DataLoader([np.ones(2), np.ones(3)], batch_size=2))


def test_shuffle_is_reproducible_and_new_every_epoch():
    X, Y = data(50)
    a = DataLoader(ArrayDataset(X, Y), batch_size=50, shuffle=True, seed=3)
    b = DataLoader(ArrayDataset(X, Y), batch_size=50, shuffle=True, seed=3)
    epochs_a = [next(iter(a))[1] for _ in range(3)]
    epochs_b = [next(iter(b))[1] for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        np.testing.assert_array_equal(ea, eb)
        assert sorted(ea.tolist()) == Y.tolist()
    assert not np.array_equal(epochs_a[0], epochs_a[1]), "a new order every epoch"
    other = DataLoader(ArrayDataset(X, Y), batch_size=50, shuffle=True, seed=4)
    assert not np.array_equal(next(iter(other))[1], epochs_a[0])
    unseeded = [next(iter(DataLoader(ArrayDataset(X, Y), 50, shuffle=True)))[1] for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_same_order_with_and_without_prefetch():
    X, Y = data(37)
    runs = [[y.tolist() for epoch in range(3) for _, y in loader]
            for loader in (DataLoader(ArrayDataset(X, Y), 5, shuffle=True, seed=9, prefetch=p)
                           for p in (0, 1, 4))]
    assert runs[0] == runs[1] == runs[2]


def test_bad_arguments_are_typed_errors():
    ds = ArrayDataset(*data())
    for kwargs in ({"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": 2, "prefetch": -1},
                   {"batch_size": 2, "collate": 3}, {"batch_size": 2, "seed": -1},
                   {"batch_size": 2, "shard": object()}):
        with pytest.raises(ev.ExprError):
            DataLoader(ds, **kwargs)
    with pytest.raises(ev.ExprError, match="__len__ and __getitem__"):
        DataLoader(iter([1, 2]), batch_size=1)


# -- sharding (without MPI: any rank/size pair) -------------------------------------------

class FakeRank:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_shards_are_disjoint_equal_and_follow_the_shuffle():
    X, Y = data(23)
    for epoch in range(2):
        parts = []
        for r in range(3):
            loader = DataLoader(ArrayDataset(X, Y), 2, shuffle=True, seed=1, shard=FakeRank(r, 3))
            loader.epoch = epoch
            parts.append(np.concatenate([y for _, y in loader]))
            assert len(loader) == 4                       # 23 // 3 = 7 samples: 4 batches
        assert [len(p) for p in parts] == [7, 7, 7]
        union = np.concatenate(parts)
        assert len(set(union.tolist())) == 21 and set(union.tolist()) <= set(Y.tolist())
        whole = np.concatenate([y for _, y in _at_epoch(DataLoader(ArrayDataset(X, Y), 2, shuffle=True, seed=1), epoch)])
        np.testing.assert_array_equal(union, whole[:21])   # the one order, cut in three
    with pytest.raises(ev.ExprError, match="needs seed="):
        DataLoader(ArrayDataset(X, Y), 2, shuffle=True, shard=FakeRank(0, 2))


def _at_epoch(loader, epoch):
    loader.epoch = epoch
    return loader


# -- errors and shutdown -----------------------------------------------------------------

class Broken:
    """Fails on sample `bad` with its own exception type."""

    class Error(Exception):
        pass

    def __init__(self, n=20, bad=7, delay=0.0):
        self.n, self.bad, self.delay = n, bad, delay

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.delay)
        if i == self.bad:
            raise Broken.Error(f"sample {i} is broken")
        return np.float64(i), np.int64(i)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_dataset_exception_reaches_the_consumer_as_is(prefetch):
    got = []
    with pytest.raises(Broken.Error, match="sample 7 is broken") as e:
        for _, y in DataLoader(Broken(), batch_size=3, prefetch=prefetch):
            got.append(y.tolist())
    assert got == [[0, 1, 2], [3, 4, 5]], "the batches before the broken one arrive first"
    assert any(f.co_name == "__getitem__" for f in _frames(e.value.__traceback__)), \
        "the dataset's own traceback is kept"


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame.f_code
        tb = tb.tb_next


def test_close_stops_the_thread_and_ends_the_epoch():
    loader = DataLoader(Broken(n=1000, bad=-1), batch_size=2, prefetch=2)
    it = iter(loader)
    next(it)
    assert len(loader_threads()) == 1
    loader.close()
    assert not loader_threads()
    with pytest.raises(StopIteration):
        next(it)
    it2 = iter(loader)                  # the next epoch starts afresh
    assert next(it2)[1].tolist() == [0, 1]
    it2.close()
    assert not loader_threads()


def test_a_dropped_iterator_stops_its_thread():
    loader = DataLoader(Broken(n=1000, bad=-1), batch_size=2, prefetch=2)
    it = iter(loader)
    next(it)
    assert len(loader_threads()) == 1
    del it                              # garbage: its finalizer stops the producer
    gc.collect()
    assert not loader_threads()
    for _ in loader:                    # leaving a loop early drops its iterator too
        break
    assert not loader_threads()


def test_a_new_epoch_closes_the_one_left_unfinished():
    loader = DataLoader(Broken(n=1000, bad=-1), batch_size=2, prefetch=2)
    it = iter(loader)
    next(it)
    it2 = iter(loader)
    assert len(loader_threads()) == 1
    with pytest.raises(StopIteration):
        next(it)
    del it2


def test_keyboard_interrupt_while_waiting_stops_the_thread():
    loader = DataLoader(Broken(n=50, bad=-1, delay=0.4), batch_size=1, prefetch=2)
    main = threading.main_thread().ident
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    start = time.process_time()
    wall = time.perf_counter()
    timer.start()
    it = iter(loader)                   # held: the interrupt itself must stop the thread
    with pytest.raises(KeyboardInterrupt):
        for _ in it:
            pass
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    timer.join()
    assert not loader_threads(), "the interrupt stopped the producer"
    # NOTE: the consumer blocked on the queue: it spent its wait asleep, not spinning.
    assert cpu < 0.5 * wall


def test_keyboard_interrupt_in_the_loop_body_stops_the_thread():
    loader = DataLoader(Broken(n=1000, bad=-1), batch_size=2, prefetch=3)
    with pytest.raises(KeyboardInterrupt):
        for _ in loader:
            raise KeyboardInterrupt
    assert not loader_threads()


# -- resuming ----------------------------------------------------------------------------

def test_state_dict_resumes_mid_epoch_with_the_same_batches():
    X, Y = data(30)
    ref = DataLoader(ArrayDataset(X, Y), 4, shuffle=True)
    want = [y.tolist() for _ in range(2) for _, y in ref]
    a = DataLoader(ArrayDataset(X, Y), 4, shuffle=True, seed=ref.seed)
    it = iter(a)
    got = [next(it)[1].tolist() for _ in range(3)]
    state = a.state_dict()
    assert int(state["epoch"]) == 0 and int(state["position"]) == 3
    b = DataLoader(ArrayDataset(X, Y), 4, shuffle=True)          # another seed until loaded
    b.load_state_dict(state)
    a.close()
    got += [y.tolist() for _, y in b]
    got += [y.tolist() for _, y in b]
    assert got == want
    with pytest.raises(ev.ExprError, match="outside"):
        b.load_state_dict({"epoch": 0, "position": 99, "seed": 1})


def test_data_benchmark_runs_in_smoke_mode(tmp_path):
    """Only that it runs and every row feeds the same number of steps; the timings are
    for a quiet machine, never for a test."""
    pytest.importorskip("sklearn")
    import os
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_data.py"), "--smoke"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(root)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DataLoader(per-sample dataset), prefetch=2" in proc.stdout
