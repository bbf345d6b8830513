"""Checkpoints written collectively by every rank hold the global field."""
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, make_heat, run_to_end
from solver.io.checkpoint import write_checkpoint
from solver.io.rotation import list_checkpoints

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]

world = MPI.COMM_WORLD


@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_checkpoint_holds_global_field(shared_tmp, shape):
    model = run_to_end(make_heat(world, f"heat.shape={shape}", "heat.initial=random", "time.steps=3"))
    path = write_checkpoint(shared_tmp, model.step_count, world, model.checkpoint_attrs(),
                            model.checkpoint_datasets())
    field = gather_field(model)
    ok = True
    if world.rank == 0:
        with h5py.File(path, "r") as f:
            ok = (f.attrs["format"] == "solver-checkpoint" and f.attrs["problem"] == "heat"
                  and f.attrs["step"] == 3 and f.attrs["nranks"] == world.size
                  and np.array_equal(f["heat/u"][...], field)
                  and np.allclose(f["heat/u"].attrs["spacing"], [1 / n for n in shape]))
        ok = ok and not [n for n in os.listdir(shared_tmp) if n.endswith(".part")]
    assert world.bcast(ok, root=0)


def test_keep_prunes_old_checkpoints_of_the_same_run_only(shared_tmp):
    model = make_heat(world, "heat.shape=[8,8]", "time.steps=5")
    write_checkpoint(shared_tmp, 0, world, {**model.checkpoint_attrs(), "run_id": "another run"},
                     model.checkpoint_datasets())
    for _ in range(5):
        model.step()
        write_checkpoint(shared_tmp, model.step_count, world, {**model.checkpoint_attrs(), "run_id": "this run"},
                         model.checkpoint_datasets(), keep=2)
    steps = [s for s, _ in list_checkpoints(shared_tmp)]
    assert steps == [0, 4, 5]
