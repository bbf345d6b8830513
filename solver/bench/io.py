"""``bench io``: what checkpointing costs the step loop, written
synchronously and from the background writer, the checkpoint write
bandwidth against a plain sequential write of the same bytes, and what the
checks inside a checkpoint write cost (the checksum, the read-back)."""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from ..parallel.mpi import MPI, log
from . import timed_run


def bench_io(comm, shape, steps, every, scratch, repeats=3, backend="auto"):
    base = [f"heat.shape={list(shape)}", f"time.steps={steps}", "output.log_every=1000000", "output.keep=2",
            f"backend.name={backend}"]
    cases = {
        "final state only": base + ["output.checkpoint_every=0"],
        "synchronous": base + [f"output.checkpoint_every={every}", "output.background=false"],
        "background": base + [f"output.checkpoint_every={every}", "output.background=true"],
    }
    log(f"bench io: heat {'x'.join(map(str, shape))}, {steps} steps, checkpoint every {every} steps "
        f"(fsync on each), {comm.size} ranks, backend {backend}, median of {repeats}")
    times = {name: [] for name in cases}
    for _ in range(repeats):                      # interleaved, so drifts hit every case alike
        for name, overrides in cases.items():
            seconds, _, model = timed_run(comm, os.path.join(scratch, "run"), overrides)
            times[name].append(seconds)
            model.close()
    med = {name: statistics.median(v) for name, v in times.items()}
    base_t = med["final state only"]
    log(f"{'case':<18} {'wall s':>8} {'added s':>8}   runs")
    for name in cases:
        log(f"{name:<18} {med[name]:8.3f} {med[name] - base_t:8.3f}   " + " ".join(f"{t:.3f}" for t in times[name]))
    sync_add, bg_add = med["synchronous"] - base_t, med["background"] - base_t
    if sync_add > 0:
        log(f"background adds {bg_add / sync_add:.0%} of what synchronous writing adds (goal: at most 25%)")

    # bandwidth: one checkpoint of the final state against a plain write of the same bytes
    from ..io.checkpoint import write_checkpoint
    from ..io.safefile import create_new
    model.set_initial()
    nbytes = model.work_per_step * 8
    ckpt, plain, checks = [], [], []
    directory = os.path.join(scratch, "bandwidth")      # scratch is the benchmark's own (see scratch_dir)
    if comm.rank == 0:
        os.makedirs(directory)
    comm.Barrier()
    for k in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        path = write_checkpoint(directory, k, comm, model.checkpoint_attrs(), model.checkpoint_datasets())
        ckpt.append(time.perf_counter() - t0)
        checks.append(_check_seconds(comm, path, model.checkpoint_datasets()))
        if comm.rank == 0:
            data = np.random.default_rng(k).random(model.work_per_step)
            t0 = time.perf_counter()
            with os.fdopen(create_new(os.path.join(directory, f"plain_{k}.bin")), "wb") as fh:
                data.tofile(fh)
                fh.flush()
                os.fsync(fh.fileno())
            plain.append(time.perf_counter() - t0)
        comm.Barrier()
    if comm.rank == 0:
        c, p = statistics.median(ckpt), statistics.median(plain)
        log(f"write bandwidth, {nbytes / 1e6:.1f} MB with fsync: checkpoint {nbytes / c / 1e6:.0f} MB/s "
            f"({c:.3f} s), plain tofile {nbytes / p / 1e6:.0f} MB/s ({p:.3f} s): checkpoint at {p / c:.0%} of plain")
        s, r = (statistics.median(v) for v in zip(*checks))
        log(f"checks inside each checkpoint write (slowest rank): checksum {s * 1e3:.1f} ms ({s / c:.0%} of the "
            f"write), read-back {r * 1e3:.1f} ms ({r / c:.0%}); {_cpu_name()}")
    return med


def _check_seconds(comm, path, datasets):
    """(checksum, read-back) seconds of one checkpoint, the slowest rank's."""
    import h5py

    from ..io import blocks, checksum
    t0 = time.perf_counter()
    for ds in datasets:
        checksum.partial(ds.block, ds.shape, ds.where)
    t1 = time.perf_counter()
    if blocks.parallel_io(comm):
        with h5py.File(path, "r") as f:         # every rank reads the layout (read only, serial)
            offsets = [f[ds.name].id.get_offset() for ds in datasets]
        t2 = time.perf_counter()
        blocks._read_back(path, [-1 if o is None else o for o in offsets], datasets)
        read_back = time.perf_counter() - t2
    else:
        read_back = 0.0
    seconds = np.array([t1 - t0, read_back])
    comm.Allreduce(MPI.IN_PLACE, seconds, op=MPI.MAX)
    return tuple(seconds)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU unknown"
