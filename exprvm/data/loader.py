"""DataLoader: a dataset read in batches, one epoch per iteration, the next batches made
on a background thread while the caller trains on the current one."""
import queue
import secrets
import threading
import weakref

import numpy as np

from ..errors import ExprError, ShapeError


class DataLoader:
    """Batches of a dataset, one epoch per ``for`` loop, made ahead on a background thread.

    Parameters
    ----------
    dataset : object with ``__len__`` and ``__getitem__``
        An :class:`ArrayDataset`, a :class:`TextStreams`, or any sequence of samples.
    batch_size : int or None
        Samples per batch. ``None``: every item of the dataset is a whole batch (as a
        :class:`TextStreams` window is), yielded as it is.
    shuffle : bool, default False
        Read the samples in a new order every epoch.
    seed : int, optional
        The orders' seed: epoch ``e`` reads the permutation drawn from ``(seed, e)``, so
        two loaders with one seed read the same batches. Without a seed one is drawn
        when the loader is made (and kept in :meth:`state_dict`).
    drop_last : bool, default False
        Leave out the last batch of an epoch when it is short.
    collate : callable, optional
        ``collate(samples) -> batch`` for a list of samples. By default tuple samples
        become a tuple of stacked arrays, one per field (dict samples a dict, arrays an
        array); an :class:`ArrayDataset` is gathered directly, with the same result.
    prefetch : int, default 2
        Batches made ahead on a background thread (a bounded queue); 0 makes each batch
        in the caller's thread when it is asked for. The order is the same either way.
    shard : ev.distributed.Context, optional
        Under data-parallel training: each epoch's order (the same on every rank: give
        ``seed=`` when shuffling) is cut into ``size`` disjoint parts of
        ``len(dataset) // size`` samples and this rank reads part ``rank``, so every rank
        takes the same number of steps (up to ``size - 1`` samples an epoch are left
        out, different ones each epoch when shuffling).

    Notes
    -----
    A dataset's exception reaches the caller as it was raised, at the batch it broke
    (the batches before it are delivered first), and ends the epoch. The thread stops
    when the epoch ends, on :meth:`close`, when the iterator is garbage collected, and
    when the caller's loop is interrupted (``KeyboardInterrupt``).

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ds = ev.data.ArrayDataset(np.arange(10.0).reshape(5, 2), np.arange(5))
    >>> for x, y in ev.data.DataLoader(ds, batch_size=2):
    ...     print(x.shape, y)
    (2, 2) [0 1]
    (2, 2) [2 3]
    (1, 2) [4]
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=None, drop_last=False, collate=None,
                 prefetch=2, shard=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ExprError(f"DataLoader: the dataset must have __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size <= 0):
            raise ExprError(f"DataLoader: batch_size must be a positive int or None, got {batch_size!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ExprError(f"DataLoader: prefetch must be an int >= 0, got {prefetch!r}")
        if collate is not None and not callable(collate):
            raise ExprError(f"DataLoader: collate must be callable, got {collate!r}")
        if batch_size is None and collate is not None:
            raise ExprError("DataLoader: collate needs a batch_size (with batch_size=None every "
                            "item is already a batch)")
        ordered = getattr(dataset, "ordered", False)
        if ordered and shuffle:
            raise ExprError(f"DataLoader: {type(dataset).__name__} must be read in order; "
                            "shuffle=True would break it")
        if ordered and shard is not None:
            raise ExprError(f"DataLoader: give shard= to the {type(dataset).__name__} itself (each "
                            "rank reads its own contiguous part)")
        if shard is not None:
            rank, size = getattr(shard, "rank", None), getattr(shard, "size", None)
            if not (isinstance(rank, int) and isinstance(size, int) and 0 <= rank < size):
                raise ExprError(f"DataLoader: shard must be an ev.distributed.Context (rank, size), "
                                f"got {shard!r}")
            if shuffle and seed is None:
                raise ExprError("DataLoader: shuffling with shard= needs seed= (every rank must "
                                "draw the same order to read disjoint parts of it)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63):
            raise ExprError(f"DataLoader: seed must be an int in [0, 2**63) or None, got {seed!r}")
        self.dataset = dataset
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self.collate, self.prefetch, self.shard = collate, int(prefetch), shard
        self.epoch = 0              # the epoch the next iteration reads
        self._skip = 0              # batches of it already read (a resumed state)
        self._current = None        # [epoch, batches delivered, finished] of the iteration running
        self._stop = None           # the running iteration's finalizer

    # -- what an epoch reads ------------------------------------------------------------
    def _order(self, epoch):
        n = len(self.dataset)
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(epoch,)))
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        if self.shard is not None:
            part = n // self.shard.size
            order = order[self.shard.rank * part:(self.shard.rank + 1) * part]
        return order

    def _batches(self, epoch):
        order = self._order(epoch)
        if self.batch_size is None:
            return list(order)
        b = self.batch_size
        stop = len(order) - len(order) % b if self.drop_last else len(order)
        return [order[i:i + b] for i in range(0, stop, b)]

    def __len__(self):
        """Batches in one epoch (this rank's, under ``shard=``)."""
        n = len(self.dataset)
        if self.shard is not None:
            n //= self.shard.size
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        self.close()
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0
        batches = self._batches(epoch)[skip:]
        self._current = [epoch, skip, False]
        maker = _Maker(self.dataset, self.batch_size, self.collate)
        it = _Epoch(maker, batches, self.prefetch, self._current)
        self._stop = it.finalizer
        return it

    def close(self):
        """Stop the background thread of the iteration running, if any (waits for the batch
        being made); that iteration then ends. Iterating again starts the next epoch."""
        if self._stop is not None:
            self._stop()
            self._stop = None

    # -- resuming -----------------------------------------------------------------------
    def state_dict(self):
        """Where the loader is: ``{"epoch", "position", "seed"}`` as int64 arrays (a checkpoint
        section). ``position`` counts the batches the caller received of that epoch."""
        epoch, position = self.epoch, self._skip
        cur = self._current
        if cur is not None and not cur[2]:
            epoch, position = cur[0], cur[1]
        return {"epoch": np.array(epoch, np.int64), "position": np.array(position, np.int64),
                "seed": np.array(self.seed, np.int64)}

    def load_state_dict(self, d):
        """Continue from a :meth:`state_dict`: the next iteration reads the rest of that epoch,
        in the same order (the seed comes back too)."""
        try:
            epoch, position, seed = (int(np.asarray(d[k])) for k in ("epoch", "position", "seed"))
        except (KeyError, TypeError, ValueError) as e:
            raise ExprError(f"DataLoader.load_state_dict: not a loader state ({e!r})") from None
        if epoch < 0 or not 0 <= position <= len(self):
            raise ExprError(f"DataLoader.load_state_dict: position {position} of epoch {epoch} is "
                            f"outside this loader's {len(self)} batches")
        self.close()
        self.epoch, self._skip, self.seed, self._current = epoch, position, seed, None

    def __repr__(self):
        return (f"<ev.data.DataLoader: {len(self)} batches of {self.batch_size} from "
                f"{type(self.dataset).__name__}, shuffle={self.shuffle}, prefetch={self.prefetch}>")


class _Maker:
    """Makes the batch of one entry of an epoch's list (an index array, or one index)."""

    def __init__(self, dataset, batch_size, collate):
        self.dataset, self.whole, self.collate = dataset, batch_size is None, collate
        self.take = getattr(dataset, "take", None) if collate is None else None

    def __call__(self, idx):
        if self.whole:
            return self.dataset[int(idx)]
        if self.take is not None:
            return self.take(idx)
        samples = [self.dataset[int(i)] for i in idx]
        return (self.collate or default_collate)(samples)


def default_collate(samples):
    """Stack a list of samples into a batch: tuples (and lists) field by field into a tuple
    of arrays, dicts key by key, anything else with ``np.stack``.

    Parameters
    ----------
    samples : list
        Samples of one structure, as a dataset's ``__getitem__`` returns them.

    Returns
    -------
    tuple, dict or numpy.ndarray
        The batch: axis 0 of every array runs over the samples.

    Raises
    ------
    ShapeError
        If the samples' fields differ in shape or structure.
    """
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if any(not isinstance(s, (tuple, list)) or len(s) != len(first) for s in samples):
            raise ShapeError(f"collate: the samples' structures differ (the first has {len(first)} fields)")
        return tuple(default_collate(list(field)) for field in zip(*samples))
    if isinstance(first, dict):
        if any(not isinstance(s, dict) or s.keys() != first.keys() for s in samples):
            raise ShapeError(f"collate: the samples' keys differ (the first has {sorted(first)})")
        return {k: default_collate([s[k] for s in samples]) for k in first}
    arrays = [np.asarray(s) for s in samples]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ShapeError(f"collate: samples of different shapes cannot be stacked: {sorted(shapes)}")
    return np.stack(arrays)


_END = object()


class _Failure:
    """The dataset's exception, carried to the caller's thread."""

    def __init__(self, exc):
        self.exc = exc


def _produce(make, batches, q, stop):
    # NOTE: every put is preceded by a look at `stop`, and close() sets `stop` before it
    # empties the queue, so at most one put follows that: it never blocks on a full queue.
    try:
        for idx in batches:
            if stop.is_set():
                return
            item = make(idx)
            if stop.is_set():
                return
            q.put(item)
        if not stop.is_set():
            q.put(_END)
    except BaseException as e:      # the dataset's error, for the caller
        if not stop.is_set():
            q.put(_Failure(e))


def _shutdown(stop, q, thread):
    stop.set()
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            break
    if thread is not None and thread is not threading.current_thread():
        thread.join()


class _Epoch:
    """One epoch's iterator. The producer thread holds only the queue and the stop event,
    never this object, so dropping the iterator finalizes it and stops the thread."""

    def __init__(self, make, batches, prefetch, progress):
        self._make, self._progress = make, progress
        self._done = False
        self._stopped = stop = threading.Event()     # set by close(), from here or the loader
        if prefetch == 0:
            self._pending, self._q = iter(batches), None
            self.finalizer = weakref.finalize(self, _shutdown, stop, queue.Queue(), None)
            return
        self._q = queue.Queue(maxsize=prefetch)
        thread = threading.Thread(target=_produce, args=(make, batches, self._q, stop),
                                  name="ev.data.DataLoader", daemon=True)
        self.finalizer = weakref.finalize(self, _shutdown, stop, self._q, thread)
        thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._done or self._stopped.is_set():
            self._done = True
            raise StopIteration
        try:
            if self._q is None:
                idx = next(self._pending, _END)
                item = _END if idx is _END else self._make(idx)
            else:
                item = self._q.get()
        except BaseException:       # the dataset's error (no prefetch), or an interrupt
            self._end()
            raise
        if item is _END:
            self._end(finished=True)
            raise StopIteration
        if isinstance(item, _Failure):
            self._end()
            raise item.exc
        self._progress[1] += 1
        return item

    def _end(self, finished=False):
        self._done = True
        self._progress[2] = finished
        self.finalizer()

    def close(self):
        """Stop making batches (waits for the one being made); the iteration ends."""
        self._done = True
        self.finalizer()
