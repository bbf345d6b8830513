"""diagnostics.csv is written only through files the run made: a link
planted at its temporary name or at its own name is never written through."""
import os

import pytest
from mpi4py import MPI

from solver.driver import DiagnosticsLog

pytestmark = pytest.mark.timeout(60)

HISTORY = "step,time,heat\n0,0.0,1.0\n5,0.5,0.9\n10,1.0,0.8\n"


def test_a_link_at_the_old_temporary_name_is_not_written_through(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    path = tmp_path / "diagnostics.csv"
    path.write_text(HISTORY)
    os.symlink(target, str(path) + ".part")
    log = DiagnosticsLog(str(path), MPI.COMM_SELF)
    log.begin(10)                                     # a restart at step 10 keeps the rows before it
    log.append({"step": 10, "time": 1.0, "heat": 0.8})
    assert target.read_text() == "keep me\n"
    assert path.read_text() == "step,time,heat\n0,0.0,1.0\n5,0.5,0.9\n10,1.0,0.8\n"
    assert not path.is_symlink()


@pytest.mark.parametrize("dangling", [True, False])
def test_a_link_at_its_own_name_is_moved_aside_not_followed(tmp_path, dangling):
    target = tmp_path / "elsewhere.csv"
    if not dangling:
        target.write_text(HISTORY)
    path = tmp_path / "diagnostics.csv"
    os.symlink(target, path)
    log = DiagnosticsLog(str(path), MPI.COMM_SELF)
    log.begin(10)
    log.append({"step": 10, "time": 1.0, "heat": 0.8})
    assert target.exists() != dangling and (dangling or target.read_text() == HISTORY)
    assert os.path.islink(str(path) + ".damaged")
    assert not path.is_symlink() and path.read_text() == "step,time,heat\n10,1.0,0.8\n"
