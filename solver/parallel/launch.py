"""How this process was launched, checked before and after MPI starts.

The silent failure it catches: ``srun -n 8 python -m solver`` with an MPI
that does not talk to SLURM (no PMI/PMIx), which starts eight independent
one-rank runs that overwrite each other.  Imports nothing from MPI.
"""
from __future__ import annotations

import os

from ..config import ConfigError

# variables a process manager sets for an MPI process it wired up (PMIx, PMI-1/2, Open MPI's own)
_WIRED = ("PMIX_RANK", "PMI_RANK", "PMI_FD", "PMI_ID", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def srun_tasks() -> int | None:
    """Tasks of the srun step this process belongs to; None outside a step
    (the batch shell of a job, or no SLURM at all)."""
    if "SLURM_STEP_ID" not in os.environ:
        return None
    text = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or ""
    return int(text) if text.isdigit() else None


def check_before_mpi() -> None:
    """Refuse tasks that srun started with no way to find each other."""
    tasks = srun_tasks()
    if tasks and tasks > 1 and not any(k in os.environ for k in _WIRED):
        raise ConfigError(f"srun started {tasks} tasks without MPI support (no PMI or PMIx in their environment), "
                          f"so each would run alone as rank 0 of 1: launch with srun --mpi=pmix "
                          f"(srun --mpi=list shows what this cluster offers)")


def check_world(size: int) -> None:
    """After MPI starts: the world must be the srun step (not so under
    mpiexec inside an allocation, whose ranks are not srun's tasks)."""
    tasks = srun_tasks()
    if tasks and "OMPI_COMM_WORLD_SIZE" not in os.environ and size != tasks:
        raise ConfigError(f"the MPI world has {size} rank{'s' if size != 1 else ''} but srun started {tasks} "
                          f"tasks in this step (SLURM_STEP_NUM_TASKS): the MPI library is not the one SLURM "
                          f"launches for; launch with srun --mpi=pmix, or mpiexec inside the allocation")
