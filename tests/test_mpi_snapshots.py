"""Snapshots across ranks, in process: the background writer interleaves
snapshots with checkpoints while the model steps on, and ranks that hold
none of the chosen bodies still take part in the collective write."""
import os

import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, gather_particles, make_heat, make_nbody
from solver.io.snapshots import SnapshotSeries, read_snapshot, snapshot_paths
from solver.io.writer import CheckpointWriter
from solver.io.xdmf import SnapshotCollection
from solver.models import get

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]
world = MPI.COMM_WORLD


def _series(model, run, **keys):
    output = model.settings.output.__class__(**{**model.settings.output.__dict__, **keys})
    spec = get(model.kind)
    return SnapshotSeries(output, run, spec.SNAPSHOT_FIELDS, {"run_id": "test"},
                          SnapshotCollection(run, spec.xdmf_grid))


def _on_root(check):
    """``check()`` on rank 0, its verdict on every rank."""
    return world.bcast(check() if world.rank == 0 else None, root=0)


def test_snapshots_and_checkpoints_written_in_the_background_hold_their_steps_state(shared_tmp):
    model = make_heat(world, "heat.shape=[13,9,6]", "heat.initial=random")
    snaps = _series(model, shared_tmp, snapshot_every=1, snapshot_fields=("u",), snapshot_precision="float32")
    assert snaps.begin(world, model.step_count, model.time, branch=False)
    writer = CheckpointWriter(world, os.path.join(shared_tmp, "checkpoints"), background=True,
                              snapshots=(snaps.directory, snaps.written))
    if world.rank == 0:
        os.makedirs(os.path.join(shared_tmp, "checkpoints"))
    expected = {}
    for _ in range(4):
        expected[model.step_count] = gather_field(model)
        writer.submit(model.step_count, snaps.attrs(model), snaps.datasets(model), snapshot=True)
        writer.submit(model.step_count, model.checkpoint_attrs(), model.checkpoint_datasets())
        model.step()                 # steps on while the checkpoint (lending the state) is written
    writer.close()

    def check():
        paths = snapshot_paths(shared_tmp)
        snaps_read = [read_snapshot(p) for p in paths]
        return ([s["step"] for s in snaps_read] == [0, 1, 2, 3]
                and all(np.array_equal(s["heat/u"], expected[s["step"]].astype(np.float32)) for s in snaps_read)
                and open(os.path.join(shared_tmp, "run.xdmf")).read().count("<Time ") == 4)
    assert _on_root(check)


@pytest.mark.parametrize("bodies", [1, 5])
def test_ranks_without_any_of_the_chosen_bodies_take_part(shared_tmp, bodies):
    model = make_nbody(world, "nbody.n=9")
    snaps = _series(model, shared_tmp, snapshot_every=1, snapshot_fields=("positions", "ids"),
                    snapshot_bodies=bodies)
    snaps.begin(world, 0, 0.0, branch=False)
    writer = CheckpointWriter(world, shared_tmp, background=True, snapshots=(snaps.directory, snaps.written))
    writer.submit(0, snaps.attrs(model), snaps.datasets(model), snapshot=True)
    writer.close()
    particles = gather_particles(model)

    def check():
        snap = read_snapshot(snapshot_paths(shared_tmp)[0])
        return (sorted(snap["arrays"]) == ["nbody/id", "nbody/position"]
                and np.array_equal(snap["nbody/id"], np.arange(bodies))
                and np.array_equal(snap["nbody/position"], particles[0][:bodies]))
    assert _on_root(check)
