"""Parallel-HDF5 corner cases across ranks: empty blocks, the gather
fallback, and writer failures raised on every rank."""
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, make_heat
from solver.io.blocks import Dataset, read_blocks
from solver.io.checkpoint import write_checkpoint
from solver.io.writer import CheckpointWriter, WriterError
from solver.parallel.cart import block_range

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]
world = MPI.COMM_WORLD


@pytest.mark.parametrize("n", [0, 1, 3])
def test_ranks_with_empty_blocks_take_part(shared_tmp, n):
    """Fewer rows than ranks: some ranks write and read nothing, nobody hangs."""
    start, size = block_range(n, world.size, world.rank)
    where = (slice(start, start + size),)
    local = np.arange(start, start + size, dtype=np.float64)[:, None] * np.ones((1, 3))
    ids = np.arange(start, start + size, dtype=np.int64)
    path = write_checkpoint(shared_tmp, 1, world, {"problem": "test", "time": 0.0, "dt": 1.0, "config": ""},
                            [Dataset("p/x", (n, 3), local, where), Dataset("p/id", (n,), ids, where)])
    back, back_ids = read_blocks(path, world, [("p/x", where), ("p/id", where)])
    assert np.array_equal(back, local) and np.array_equal(back_ids, ids)


@pytest.mark.parametrize("gather", ["0", "1"])
def test_gather_fallback_writes_the_same_file(shared_tmp, gather, monkeypatch):
    monkeypatch.setenv("SOLVER_IO_GATHER", gather)
    model = make_heat(world, "heat.shape=[13,9,5]", "heat.initial=random")
    path = write_checkpoint(shared_tmp, 0, world, model.checkpoint_attrs(), model.checkpoint_datasets())
    back = read_blocks(path, world, [("heat/u", model.decomp.global_slices)])[0]
    assert np.array_equal(back, model.local_field())
    field = gather_field(model)
    ok = True
    if world.rank == 0:
        with h5py.File(path, "r") as f:
            ok = np.array_equal(f["heat/u"][...], field)
    assert world.bcast(ok, root=0)


@pytest.mark.parametrize("background", [True, False])
def test_writer_failure_is_raised_on_every_rank(shared_tmp, monkeypatch, background):
    monkeypatch.setenv("SOLVER_TEST_FAIL_WRITE", "7")
    model = make_heat(world, "heat.shape=[8,8]")
    writer = CheckpointWriter(world, shared_tmp, background=background)
    with pytest.raises((WriterError, OSError), match="injected failure"):
        writer.submit(7, model.checkpoint_attrs(), model.checkpoint_datasets())
        writer.settle()
    world.Barrier()
    assert not [n for n in os.listdir(shared_tmp) if n.startswith("step_")]


def test_background_writer_writes_while_the_caller_goes_on(shared_tmp):
    model = make_heat(world, "heat.shape=[16,12]", "heat.initial=random")
    writer = CheckpointWriter(world, shared_tmp, keep=2, background=True)
    expected = {}
    for step in range(1, 5):
        model.step()
        expected[model.step_count] = model.local_field()
        writer.submit(model.step_count, model.checkpoint_attrs(), model.checkpoint_datasets())
    writer.close()
    steps = sorted(int(n[5:14]) for n in os.listdir(shared_tmp) if n.endswith(".h5"))
    assert steps == [3, 4]
    for step in steps:
        path = os.path.join(shared_tmp, f"step_{step:09d}.h5")
        back = read_blocks(path, world, [("heat/u", model.decomp.global_slices)])[0]
        assert np.array_equal(back, expected[step])
