"""Run every benchmark: python benchmarks/run_all.py [--quick] [--threads both|default|N] [--only a,b]

Prints, per benchmark, the median time of one training step (or run) and its ratio to
handwritten numpy measured in the same run, for every implementation: exprvm's
TapeMachine and LispMachine, PyTorch eager, PyTorch's fused torch.nn.RNN / LSTM / GRU and
jax.jit where installed. Then compile times (cold and warm kernel cache) and, unless
--only or --no-onemil, bench_onemil.py's 1M-element kernel table.

--threads both (the default) runs every row twice, each in its own process: in the
default environment (no thread variable set: every library picks its own threads, and
exprvm's thread policy picks its own), and pinned to one thread (OPENBLAS/OMP/MKL
variables and torch.set_num_threads(1), set before numpy is imported), then prints both
side by side. --threads default or --threads N runs one of them.

NOTE: on a shared 2-core machine a multithreaded BLAS spinning against other processes
made single steps 10-50x slower at random, which no median survives: time in a quiet
window.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no compile-scaling sweep")
    ap.add_argument("--threads", default="both", help="both (default), default, or a thread count")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds per benchmark")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names")
    ap.add_argument("--backend", default=None, help="kernel backend for the tape (numpy, c)")
    ap.add_argument("--no-onemil", action="store_true", help="skip bench_onemil.py (1M-element kernels)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, one round: checks that everything runs (times mean nothing)")
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)     # where a child writes its rows
    return ap.parse_args(argv)


def pin_threads(n):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _names(args, models, gru):
    if args.only:
        return args.only.split(",")
    names = list(models.NAMES)
    names.insert(names.index("lstm_b32") + 1, gru.NAME)
    return names


def _import_path():
    here = os.path.dirname(os.path.abspath(__file__))
    # NOTE: this checkout's exprvm, not whichever one is installed in site-packages.
    sys.path[:0] = [here, os.path.dirname(here)]
    return here


def run_one(args):
    """One environment, in this process: the model rows (and, alone, everything else)."""
    env = dict(os.environ)      # bench_onemil.py runs with the caller's threads, not ours
    pinned = args.threads != "default"
    if pinned:
        pin_threads(int(args.threads))
    _import_path()
    try:
        import torch
        if pinned:
            torch.set_num_threads(int(args.threads))
    except ImportError:
        pass
    import bench_models
    import gru
    import models

    names = _names(args, models, gru)
    rounds = args.rounds or (1 if args.smoke else 5 if args.quick else 15)
    where = f"pinned to {args.threads} thread(s)" if pinned else "default environment (no thread pinning)"
    print(f"exprvm benchmarks: {rounds} rounds, medians; {where}", flush=True)
    rows = bench_models.run(names, rounds, args.backend, small=args.smoke,
                            target_s=0.001 if args.smoke else 0.02)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)
    else:
        extras(args, names, env)
    return rows


def extras(args, names, env=None):
    """Compile times (cold and warm cache), compile scaling, OneMil."""
    here = _import_path()
    import bench_compile
    import bench_models
    print()
    bench_models.print_compile_times([n for n in ("rnn_b1", "lstm_b32") if n in names], small=args.smoke)
    if not args.smoke:
        bench_compile.run(quick=args.quick)
        import bench_function
        print()
        bench_function.main(["--quick"] if args.quick else [])
    onemil = os.path.join(here, "bench_onemil.py")
    if not args.no_onemil and not args.only and not args.smoke and os.path.exists(onemil):
        print("\n" + "-" * 72, flush=True)
        subprocess.run([sys.executable, onemil] + (["--quick"] if args.quick else []), env=env, check=False)


def _child(argv, threads, path):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--threads", threads, "--json", path]
    return subprocess.run(cmd, check=False).returncode


def table(default, pinned):
    """Both environments side by side: ms and ratio to numpy per implementation."""
    lines = [f"{'benchmark':10s} {'implementation':14s} {'default env':>20s} {'pinned, 1 thread':>20s}"]
    seen = {}
    for env, rows in (("d", default), ("p", pinned)):
        for name, impl, t, ratio in rows:
            seen.setdefault((name, impl), {})[env] = (t, ratio)
    for (name, impl), v in seen.items():
        cells = [f"{v[e][0] * 1e3:9.3f} ms {v[e][1]:5.2f}x" if e in v else f"{'-':>20s}" for e in "dp"]
        lines.append(f"{name:10s} {impl:14s} {cells[0]:>20s} {cells[1]:>20s}")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.threads != "both":
        run_one(args)
        return
    rest = [a for i, a in enumerate(argv) if a != "--threads" and (i == 0 or argv[i - 1] != "--threads")]
    with tempfile.TemporaryDirectory(prefix="exprvm-bench-") as tmp:
        paths = {k: os.path.join(tmp, f"{k}.json") for k in ("default", "1")}
        for k in ("default", "1"):
            if _child(rest, k, paths[k]) != 0:
                print(f"(the {k!r} run failed)", file=sys.stderr)
        rows = {}
        for k, p in paths.items():
            try:
                with open(p) as f:
                    rows[k] = json.load(f)
            except (OSError, ValueError):
                rows[k] = []
    print("\n" + "=" * 72 + "\nevery row in both environments (median ms, ratio to handwritten numpy)\n")
    print(table(rows["default"], rows["1"]), flush=True)
    _import_path()
    import gru
    import models
    extras(args, _names(args, models, gru))      # once, in the default environment


if __name__ == "__main__":
    main()
