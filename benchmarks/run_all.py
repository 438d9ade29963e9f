"""Run every benchmark: python benchmarks/run_all.py [--quick] [--threads N] [--only a,b]

Prints, per benchmark, the median time of one training step (or run) and its
ratio to handwritten numpy measured in the same run, then compile times, then
(unless --only or --no-onemil) bench_onemil.py's 1M-element kernel table.

NOTE: BLAS and OpenMP are pinned to --threads (default 1) for every
implementation before numpy is imported: on a shared 2-core machine a
multithreaded BLAS spinning against other processes made single steps 10-50x
slower at random, which no median survives.
"""
import argparse
import os
import subprocess
import sys


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no compile-scaling sweep")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/XLA threads (default 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds per benchmark")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names")
    ap.add_argument("--backend", default=None, help="kernel backend for the tape (numpy, c)")
    ap.add_argument("--no-onemil", action="store_true", help="skip bench_onemil.py (1M-element kernels)")
    return ap.parse_args(argv)


def pin_threads(n):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv=None):
    args = parse(argv)
    env = dict(os.environ)      # bench_onemil.py runs with the caller's threads, not ours
    pin_threads(args.threads)
    here = os.path.dirname(os.path.abspath(__file__))
    # NOTE: this checkout's exprvm, not whichever one is installed in site-packages.
    sys.path[:0] = [here, os.path.dirname(here)]
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    import bench_compile
    import bench_models
    import models

    names = args.only.split(",") if args.only else list(models.NAMES)
    rounds = args.rounds or (5 if args.quick else 15)
    print(f"exprvm benchmarks: {rounds} rounds, medians; threads={args.threads}")
    bench_models.run(names, rounds, args.backend)
    bench_compile.run(quick=args.quick)
    onemil = os.path.join(here, "bench_onemil.py")
    if not args.no_onemil and not args.only and os.path.exists(onemil):
        print("\n" + "-" * 72, flush=True)
        subprocess.run([sys.executable, onemil] + (["--quick"] if args.quick else []), env=env, check=False)


if __name__ == "__main__":
    main()
