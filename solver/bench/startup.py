"""``bench startup``: wall time from launching ``mpiexec -n 8 python -m
solver`` (the default problem) to its first completed step, with the kernel
cache warm.  Runs outside MPI: it launches mpiexec itself, as a user would."""
from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GOAL_SECONDS = 5.0


def _launch(ranks, output_dir):
    """(seconds to the first step's line, seconds to exit, exit status)."""
    env = dict(os.environ, SOLVER_PROGRESS="plain", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [os.environ.get("MPIEXEC", "mpiexec"), "-n", str(ranks), sys.executable, "-m", "solver",
               "--set", "output.log_every=1", "--set", "time.steps=2", "--output", output_dir]
    t0 = time.perf_counter()
    first = float("nan")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            if line.lstrip().startswith("step 1/") and math.isnan(first):
                first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, proc.returncode


def bench_startup(args) -> int:
    if args.repeats < 1 or args.ranks < 1:
        sys.stderr.write("solver: error: bench startup: --repeats and --ranks must be at least 1\n")
        return 2
    if shutil.which(os.environ.get("MPIEXEC", "mpiexec")) is None:
        sys.stderr.write("solver: error: bench startup: mpiexec is not on PATH; set MPIEXEC or activate the MPI\n")
        return 2
    scratch = tempfile.mkdtemp(prefix="solver-startup-")
    try:
        firsts, totals = [], []
        for k in range(args.repeats + 1):          # the first launch warms the caches, and is not counted
            first, total, status = _launch(args.ranks, os.path.join(scratch, str(k)))
            if status != 0 or math.isnan(first):
                sys.stderr.write(f"solver: error: bench startup: the solver exited with status {status} "
                                 f"before its first step; run it by hand to see why\n")
                return 1
            if k:
                firsts.append(first)
                totals.append(total)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    med = statistics.median(firsts)
    print(f"bench startup: mpiexec -n {args.ranks} python -m solver (default problem), warm caches, "
          f"median of {args.repeats}")
    print(f"time to the first step: {med:.2f} s (runs: {' '.join(f'{t:.2f}' for t in firsts)}); "
          f"whole 2-step run {statistics.median(totals):.2f} s")
    print(f"goal under {GOAL_SECONDS:g} s: {'met' if med < GOAL_SECONDS else 'NOT met'}")
    return 0
