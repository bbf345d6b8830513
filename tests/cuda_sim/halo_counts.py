"""What one heat halo exchange asks of the device, per rank, counted by the
simulated driver: kernel launches, host waits, copies each way, and
messages.  Run from the repository root (under mpiexec for several ranks):

    PYTHONPATH=.:tests python tests/cuda_sim/halo_counts.py [--shape 32,32,32] [--width 2] [--steps 8]

Only what happens inside the exchange's calls (begin, progress, finish)
counts; the heat kernels between them do not."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cuda_sim  # noqa: E402


def measure(comm, shape, width, steps, boundary="periodic", gpu_aware=False):
    """{count: largest per exchange on this rank} and the exchange's messages,
    plus whether the host waited only after the interior kernels were queued."""
    from helpers import heat_settings
    from solver.backends import get_backend
    from solver.models.heat import model as heat
    from solver.models.heat.model import HeatModel
    driver = cuda_sim.driver
    settings = heat_settings(f"heat.shape={list(shape)}", "heat.initial=random", f"heat.boundary={boundary}",
                             f"time.steps={steps}", f"heat.fused_steps={width}")
    backend = get_backend("cuda", comm, -1, gpu_aware)
    limit, heat.OVERLAP_LIMIT = heat.OVERLAP_LIMIT, float("inf")   # an interior swept while the halo travels
    try:
        model = HeatModel(settings, comm, backend)
    finally:
        heat.OVERLAP_LIMIT = limit              # the layout is chosen; later models in this process choose their own
    model.set_initial()
    halo = model.halo
    worst, per, ordered = {}, {}, True
    inside = {"on": False}

    def counted(method):
        def call(*args):
            before = dict(driver.counts)
            inside["on"] = True
            try:
                return method(*args)
            finally:
                inside["on"] = False
                for k, v in driver.counts.items():
                    per[k] = per.get(k, 0) + v - before[k]
        return call

    begin, progress, finish = halo.begin, halo.progress, halo.finish
    halo.begin, halo.progress, halo.finish = counted(begin), counted(progress), counted(finish)
    driver.trace = []
    exchanges = 0
    while model.step_count < model.end_step:
        per.clear()
        mark = len(driver.trace)
        model.advance(model.end_step - model.step_count)
        exchanges += 1
        for k, v in per.items():
            worst[k] = max(worst.get(k, 0), v)
        events = driver.trace[mark:]
        first_wait = next((i for i, e in enumerate(events) if e[0] == "sync"), len(events))
        interior = model._interior is not None and model._interior
        if interior and not any(e[0] == "launch" and e[1].startswith("heat_step") for e in events[:first_wait]):
            ordered = False
    driver.trace = None
    messages = len(getattr(halo, "_requests", [])) // 2
    model.close()
    return worst, messages, ordered, exchanges


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="32,32,32")
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--boundary", default="periodic")
    parser.add_argument("--gpu-aware", action="store_true")
    args = parser.parse_args()
    cuda_sim.install()
    from mpi4py import MPI
    if args.gpu_aware:
        MPI.Query_cuda_support = lambda: True         # the simulator's device memory is host memory
    comm = MPI.COMM_WORLD
    worst, messages, ordered, exchanges = measure(comm, [int(x) for x in args.shape.split(",")], args.width,
                                                  args.steps, args.boundary, args.gpu_aware)
    rows = comm.gather((worst, messages, ordered), root=0)
    if comm.rank == 0:
        print(f"per exchange per rank, largest over {exchanges} exchanges and {comm.size} rank(s): "
              f"shape {args.shape}, width {args.width}, {args.boundary}{', gpu-aware' if args.gpu_aware else ''}")
        keys = ("launches", "host_syncs", "dtoh", "htod", "timed_events")
        print("  ".join(f"{k}={max(r[0].get(k, 0) for r in rows)}" for k in keys),
              f"messages={max(r[1] for r in rows)}", f"interior_queued_before_wait={all(r[2] for r in rows)}")


if __name__ == "__main__":
    main()
