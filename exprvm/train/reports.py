"""The trainer's reports: LogReport (JSON lines, printed lines), PlotReport (a matplotlib
PNG) and ProgressBar (tqdm). Each runs on rank 0 only under ev.distributed, and keeps
what it collected in snapshots, so a resumed run's log and plot go on from there."""
import json
import math
import os
import sys

import numpy as np

from ..errors import UsageError
from .checkpoint import atomic_write_text
from .extensions import READER, Extension, trigger as make_trigger


class _Sums:
    """Per key: the sum and count of the observations since the last report, and a
    bias-corrected exponential moving average when ``beta`` is given."""

    def __init__(self, keys, beta):
        self.keys, self.beta = keys, beta
        self.sums, self.ema = {}, {}         # key -> [sum, n];  key -> [ema, n]

    def add(self, observation):
        for k, v in observation.items():
            if self.keys is not None and k not in self.keys:
                continue
            s = self.sums.setdefault(k, [0.0, 0])
            s[0] += v
            s[1] += 1
            if self.beta is not None:
                e = self.ema.setdefault(k, [0.0, 0])
                e[0] = self.beta * e[0] + (1 - self.beta) * v
                e[1] += 1

    def take(self):
        """{key: mean since the last take, key_smoothed: the moving average}; restarts the sums."""
        out = {k: s / n for k, (s, n) in self.sums.items() if n}
        for k, (e, n) in self.ema.items():
            out[f"{k}_smoothed"] = e / (1 - self.beta ** n)
        self.sums = {}
        return out

    def state(self):
        return {"sums": self.sums, "ema": self.ema}

    def load(self, d):
        self.sums = {k: [float(s), int(n)] for k, (s, n) in d["sums"].items()}
        self.ema = {k: [float(e), int(n)] for k, (e, n) in d["ema"].items()}


def _beta(smooth, who):
    if smooth is None:
        return None
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 < smooth < 1:
        raise UsageError(f"{who}: smooth= is the moving average's decay, a number in (0, 1), got {smooth!r}")
    return float(smooth)


def _makedirs(path):
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)


def _json(x):
    return np.array(json.dumps(x, sort_keys=True))


def _unjson(a):
    return json.loads(str(np.asarray(a)))


class LogReport(Extension):
    """Every trigger: one entry of the means of each observation since the last one, with
    the step, the epoch and the seconds trained; appended to ``.log`` and written as a
    JSON line.

    Parameters
    ----------
    path : str, optional
        The JSON-lines file (rewritten from ``.log`` when a run starts, so a resumed run's
        file holds the entries up to its snapshot and goes on).
    trigger : optional
        Default: after every epoch.
    keys : list of str, optional
        The observations to report (default: all).
    smooth : float, optional
        Also report ``"<key>_smoothed"``, a bias-corrected exponential moving average of
        every step's value with this decay (0.99: about 100 steps wide).
    print : str or callable, optional
        Print each entry: a format string over its keys (``"epoch {epoch} loss
        {loss:.4f} val {val/accuracy:.3f}"``) or a function of the entry returning a line
        (or None: no line for this entry).

    Examples
    --------
    >>> import exprvm as ev
    >>> log = ev.train.LogReport(trigger=(10, "steps"), print="step {step} loss {loss:.3f}")
    """

    trigger = (1, "epoch")
    priority = READER
    rank0_only = True

    def __init__(self, path=None, trigger=None, keys=None, smooth=None, print=None):
        if trigger is not None:
            self.trigger = trigger
        if print is not None and not (isinstance(print, str) or callable(print)):
            raise UsageError(f"LogReport: print= takes a format string or a function of the entry, got {print!r}")
        self.path, self.format = path, print
        self._sums = _Sums(None if keys is None else set(keys), _beta(smooth, "LogReport"))
        self.log = []

    def initialize(self, trainer):
        if self.path:
            _makedirs(self.path)
            atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in self.log))

    def observe(self, trainer):
        """Add the step's observations to the sums of the entry being made."""
        self._sums.add(trainer.observation)

    def __call__(self, trainer):
        entry = {"step": trainer.step, "epoch": trainer.epoch, "elapsed": round(trainer.elapsed_total, 3)}
        entry.update(self._sums.take())
        self.log.append(entry)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        line = None if self.format is None else self._line(entry)
        if line is not None:
            trainer.write(line)

    def _line(self, entry):
        if callable(self.format):
            line = self.format(entry)
            return None if line is None else str(line)
        try:
            return self.format.format_map(entry)
        except (KeyError, ValueError, IndexError) as e:
            raise UsageError(f"LogReport: print={self.format!r} does not fit the entry {entry} ({e!r})") from None

    def state_dict(self):
        """The log and the sums of the entry being made, as JSON (a snapshot's section)."""
        return {"log": _json(self.log), "sums": _json(self._sums.state())}

    def load_state_dict(self, d):
        """Continue from a :meth:`state_dict`."""
        self.log = _unjson(d["log"])
        self._sums.load(_unjson(d["sums"]))

    def __repr__(self):
        return f"LogReport({self.path!r})"


class PlotReport(Extension):
    """Curves of observations, drawn into a PNG with matplotlib.

    Parameters
    ----------
    keys : str, list of str, or list of lists
        What to plot; a list of lists draws one panel per inner list.
    path : str
        The PNG (written at the end of the run, and at every ``draw`` trigger).
    x : {"step", "epoch"}, default "step"
        The horizontal axis.
    trigger : optional
        When a point is added (the mean of each key since the last point); default
        ``(1, x + "s")``.
    draw : optional
        When to redraw the file besides the end (default: only at the end).
    smooth : float, optional
        Also draw a bias-corrected moving average of the points with this decay.
    yscale : str or list of str, optional
        Each panel's ("log", "linear").
    title : str, optional

    Notes
    -----
    ``.points`` holds ``{"x": [...], key: [...]}`` (NaN where a key had no value).
    """

    priority = READER
    rank0_only = True

    def __init__(self, keys, path, *, x="step", trigger=None, draw=None, smooth=None, yscale=None, title=None):
        panels = [[keys]] if isinstance(keys, str) else [[k] if isinstance(k, str) else list(k) for k in keys]
        if not panels or not all(panels) or not all(isinstance(k, str) for p in panels for k in p):
            raise UsageError(f"PlotReport: keys must be a name, a list of names or a list of lists, got {keys!r}")
        if x not in ("step", "epoch"):
            raise UsageError(f"PlotReport: x must be 'step' or 'epoch', got {x!r}")
        scales = [yscale] * len(panels) if yscale is None or isinstance(yscale, str) else list(yscale)
        if len(scales) != len(panels):
            raise UsageError(f"PlotReport: {len(scales)} yscales for {len(panels)} panels")
        self.panels, self.path, self.x, self.scales, self.title = panels, str(path), x, scales, title
        self.trigger = trigger if trigger is not None else (1, x + "s")
        self.draw_trigger = make_trigger(draw)
        self.beta = _beta(smooth, "PlotReport")
        self._sums = _Sums({k for p in panels for k in p}, None)
        self.points = {"x": [], **{k: [] for p in panels for k in p}}

    def observe(self, trainer):
        """Add the step's observations to the sums of the point being made."""
        self._sums.add(trainer.observation)

    def __call__(self, trainer):
        means = self._sums.take()
        self.points["x"].append(trainer.step if self.x == "step" else trainer.epoch)
        for k in self.points:
            if k != "x":
                self.points[k].append(means.get(k, math.nan))
        if self.draw_trigger is not None and trainer.fired(self.draw_trigger):
            self.draw()

    def finalize(self, trainer):
        if self.points["x"]:
            self.draw()

    def draw(self):
        """Write the PNG now."""
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(self.panels), figsize=(4.5 * len(self.panels) + 1, 3.8), squeeze=False)
        x = np.asarray(self.points["x"])
        for ax, keys, scale in zip(axes[0], self.panels, self.scales):
            for i, k in enumerate(keys):
                y = np.asarray(self.points[k], np.float64)
                faint = self.beta is not None
                ax.plot(x, y, color="0.75" if faint else f"C{i}", lw=0.8 if faint else 1.5, label=k,
                        marker="o" if len(x) <= 60 and not faint else None, ms=3)
                if faint:
                    ax.plot(x, _ema(y, self.beta), color=f"C{i}", lw=1.5, label=f"{k} (smoothed)")
            ax.set_xlabel(self.x)
            ax.xaxis.get_major_locator().set_params(integer=True)      # steps and epochs count
            if scale:
                ax.set_yscale(scale)
            ax.grid(alpha=0.3)
            ax.legend()
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        _makedirs(self.path)
        fig.savefig(self.path, dpi=100)
        plt.close(fig)

    def state_dict(self):
        """The points and the sums of the point being made, as JSON (a snapshot's section)."""
        return {"points": _json(self.points), "sums": _json(self._sums.state())}

    def load_state_dict(self, d):
        """Continue from a :meth:`state_dict`."""
        self.points = _unjson(d["points"])
        self._sums.load(_unjson(d["sums"]))

    def __repr__(self):
        return f"PlotReport({self.panels!r}, {self.path!r})"


def _ema(y, beta):
    out, e, n = np.empty_like(y), 0.0, 0
    for i, v in enumerate(y):
        if math.isfinite(v):
            e, n = beta * e + (1 - beta) * v, n + 1
        out[i] = e / (1 - beta ** n) if n else math.nan
    return out


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError('PlotReport needs matplotlib: pip install "exprvm[train]"') from None
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")       # NOTE: a file, never a window
    import matplotlib.pyplot as plt
    return plt


class ProgressBar(Extension):
    """A tqdm progress bar over the run's steps, showing the latest observations; lines
    the trainer prints go above it.

    Parameters
    ----------
    file : file object, default sys.stderr
    enabled : bool, optional
        Default: only when ``file`` is a terminal (so logs and pipes get no bar).
    keys : tuple of str, default ("loss",)
        The observations shown beside the bar.
    """

    trigger = None
    priority = READER - 1
    rank0_only = True

    def __init__(self, file=None, enabled=None, keys=("loss",)):
        self.file, self.enabled, self.keys = file, enabled, tuple(keys)
        self.bar = None

    def initialize(self, trainer):
        f = self.file if self.file is not None else sys.stderr
        on = self.enabled if self.enabled is not None else bool(getattr(f, "isatty", lambda: False)())
        if not on:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            raise UsageError('ProgressBar needs tqdm: pip install "exprvm[train]"') from None
        total = trainer.steps
        if total is None and trainer.epochs is not None and hasattr(trainer.loader, "__len__"):
            total = trainer.epochs * len(trainer.loader)
        self.bar = tqdm(total=total, initial=trainer.step, unit="step", file=f, mininterval=1.0,
                        dynamic_ncols=True)
        trainer._bar = self.bar

    def observe(self, trainer):
        """Advance the bar by the step just taken."""
        if self.bar is None:
            return
        self.bar.update(1)
        shown = {k: f"{trainer.observation[k]:.4g}" for k in self.keys if k in trainer.observation}
        if shown:
            self.bar.set_postfix(shown, refresh=False)

    def finalize(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            trainer._bar = None

    def __repr__(self):
        return "ProgressBar()"
