"""Text for the char-RNN example: the default corpus, a vocabulary and a batcher.

The default corpus is the Python standard library's own source, which every
Python installation carries, so the example trains with no download.
"""
import os
import sysconfig

import numpy as np

DEFAULT_CHARS = 1_000_000


def stdlib_corpus(limit=DEFAULT_CHARS):
    """About `limit` characters of standard-library .py files, in a fixed order.

    The files are the top-level modules of the stdlib directory sorted by name,
    so the same Python version always yields the same text.
    """
    root = sysconfig.get_paths()["stdlib"]
    try:
        names = sorted(n for n in os.listdir(root) if n.endswith(".py"))
    except OSError as e:
        raise SystemExit(f"cannot list the standard library at {root}: {e}; pass --text FILE")
    parts, total = [], 0
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            text = f.read()
        parts.append(text)
        total += len(text)
        if total >= limit:
            break
    corpus = "".join(parts)[:limit]
    if len(corpus) < 10_000:
        raise SystemExit(f"the standard library at {root} has too little source; pass --text FILE")
    return corpus


def load_text(path=None):
    """(text, description): the file at `path`, or the stdlib corpus when path is None."""
    if path is None:
        text = stdlib_corpus()
        return text, f"Python {sysconfig.get_python_version()} stdlib source ({len(text):,} chars)"
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return text, f"{path} ({len(text):,} chars)"


class Vocab:
    """The sorted set of characters of a text; ids are positions in it."""

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        return np.fromiter((self.index[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def codes(self):
        """The characters as code points (for a checkpoint, which stores arrays)."""
        return np.array([ord(c) for c in self.chars], dtype=np.int64)


class Streams:
    """The corpus cut into `batch` contiguous streams, read `seq` characters at a time.

    Row b of every batch continues row b of the previous one, so the final hidden
    state of one batch is the right initial state for the next (truncated BPTT).
    When the streams run out they restart at 0 and `next` reports a reset.
    """

    def __init__(self, data, batch, seq):
        length = (len(data) - 1) // batch
        if length < seq:
            raise SystemExit(f"text too short: {len(data)} chars cannot fill {batch} streams of "
                             f"{seq + 1} chars; use a longer text or smaller --batch/--seq")
        usable = batch * length
        self.x = np.ascontiguousarray(data[:usable].reshape(batch, length).T)        # (L, B)
        self.y = np.ascontiguousarray(data[1:usable + 1].reshape(batch, length).T)
        self.seq = seq
        self.pos = 0
        self.epoch = 0

    def next(self):
        """(inputs (seq, B), targets (seq, B), reset): time-major int32 arrays."""
        reset = self.pos == 0
        s = slice(self.pos, self.pos + self.seq)
        x, y = self.x[s], self.y[s]
        self.pos += self.seq
        if self.pos + self.seq > len(self.x):
            self.pos = 0
            self.epoch += 1
        return x, y, reset
