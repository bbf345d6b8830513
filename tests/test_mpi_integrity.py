"""Checkpoint integrity across ranks: checksums that do not depend on the
split, checked in parallel, and a short write found on every rank."""
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from helpers import disk_filling_write, make_heat, make_nbody
from solver.config import ConfigError
from solver.io import blocks, checkpoint, checksum
from solver.io.inputs import ChecksumMismatch, inspect, verify

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]
world = MPI.COMM_WORLD


def _stored_and_whole(path):
    """{name: (stored checksum, checksum of the whole dataset)}, on rank 0."""
    with h5py.File(path, "r") as f:
        return {name: (int(f[name].attrs["checksum"]), checksum.of_array(f[name][...]))
                for name in ("heat/u", "nbody/position", "nbody/velocity", "nbody/mass", "nbody/id") if name in f}


@pytest.mark.parametrize("gather", ["0", "1"])
@pytest.mark.parametrize("make", [
    lambda: make_heat(world, "heat.shape=[13,9,5]", "heat.initial=random"),
    lambda: make_heat(world, "heat.shape=[31,17]", "heat.initial=random"),
    lambda: make_nbody(world, "nbody.n=3", "nbody.precision='float32'"),     # ranks without bodies
], ids=["heat3d", "heat2d", "nbody-f32"])
def test_the_stored_checksum_is_that_of_the_whole_dataset(shared_tmp, monkeypatch, gather, make):
    monkeypatch.setenv("SOLVER_IO_GATHER", gather)
    model = make()
    path = checkpoint.write_checkpoint(shared_tmp, 3, world, model.checkpoint_attrs(), model.checkpoint_datasets())
    found = _stored_and_whole(path) if world.rank == 0 else None
    found = world.bcast(found, root=0)
    assert found and all(stored == whole for stored, whole in found.values()), found
    verify(inspect(path, world), world)                   # read back in parallel: it passes


@pytest.mark.parametrize("bit", [62, 0])
def test_a_flipped_bit_is_found_in_parallel_on_every_rank(shared_tmp, bit):
    model = make_heat(world, "heat.shape=[40,24]", "heat.initial=random")
    path = checkpoint.write_checkpoint(shared_tmp, 5, world, model.checkpoint_attrs(), model.checkpoint_datasets())
    if world.rank == 0:
        with h5py.File(path, "r+") as f:
            u = f["heat/u"][...]
            u.reshape(-1).view(np.uint64)[777] ^= np.uint64(1 << bit)
            f["heat/u"][...] = u
    world.Barrier()
    with pytest.raises(ChecksumMismatch, match="does not match its checksum") as caught:
        verify(inspect(path, world), world)
    assert len(set(world.allgather(str(caught.value)))) == 1


def test_a_start_field_read_by_blocks_is_checked(shared_tmp):
    from solver.models.heat.model import read_field
    model = make_heat(world, "heat.shape=[24,20]", "heat.initial=random")
    path = checkpoint.write_checkpoint(shared_tmp, 1, world, model.checkpoint_attrs(), model.checkpoint_datasets())
    where = model.decomp.global_slices
    assert np.array_equal(read_field(path, world, (24, 20), where), model.local_field())
    if world.rank == 0:
        with h5py.File(path, "r+") as f:
            f["heat/u"][3, 3] = f["heat/u"][3, 3] + 1e-12
    world.Barrier()
    with pytest.raises(ConfigError, match="heat.file: /heat/u in .* does not match its checksum"):
        read_field(path, world, (24, 20), where)


def test_a_short_write_on_every_rank_abandons_the_checkpoint_everywhere(shared_tmp, monkeypatch):
    """The disk fills once the raw data begin: Open MPI's OMPIO says nothing,
    the read-back finds it, and every rank raises; no file is left."""
    if not blocks.parallel_io(world):
        pytest.skip("checkpoints are written through HDF5 here, which reports a short write itself")
    model = make_heat(world, "heat.shape=[64,48]", "heat.initial=random")
    monkeypatch.setattr(checkpoint, "write_raw", disk_filling_write(checkpoint.write_raw))
    with pytest.raises(OSError) as caught:
        checkpoint.write_checkpoint(shared_tmp, 9, world, model.checkpoint_attrs(), model.checkpoint_datasets())
    assert world.allgather("not stored whole" in str(caught.value)).count(True) >= 1
    world.Barrier()
    assert os.listdir(shared_tmp) == []
