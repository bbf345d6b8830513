"""Checkpoint integrity: a checkpoint is whole under its final name or not
there at all (a full disk, a file size limit, a short write), its data carry
a checksum that every restart and start file checks, no file is written
through a link the run did not make, and every dead end of a restart names
its way out without anything being moved before the run is sure to start."""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, clean_env, run_solver, small_tmpfs, solver_cmd, without_launcher_report
from helpers import disk_filling_write, make_heat
from solver.io.rotation import checkpoint_name, list_checkpoints, prune

pytestmark = pytest.mark.timeout(300)

# the NumPy backend: no compiled-kernel cache files for a file size limit to trip over
SMALL = ["--set", "heat.shape=[32,32]", "--backend", "numpy", "--set", "output.log_every=10"]
CASE = ["--set", "heat.shape=[37,23]", "--set", "heat.initial='random'", "--backend", "numpy",
        "--set", "output.log_every=10"]


def _ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


def _one_line(r, code):
    """The single line a failure prints (stderr holds nothing else but, at
    times, the warning that the launcher's event library prints while
    MPI_Abort takes the ranks down: "[warn] Epoll MOD(1) on fd N failed...")."""
    assert r.returncode == code, (r.returncode, r.stdout[-1500:], r.stderr[-3000:])
    lines = [line for line in r.stderr.strip().splitlines() if not ("Epoll" in line and "Old events were" in line)]
    assert len(lines) == 1 and lines[0].startswith("solver:"), r.stderr
    return lines[0]


def _steps(run):
    return [s for s, _ in list_checkpoints(os.path.join(run, "checkpoints"))]


def _snapshot(run):
    """Every file and link under ``run``, with its bytes (or its target)."""
    out = {}
    for root, dirs, files in os.walk(run):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, run)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as fh:
                    out[rel] = fh.read()
    return out


def _temporaries(run):
    return [os.path.join(root, n) for root, _, files in os.walk(run) for n in files if n.endswith(".part")]


def _field(path):
    with h5py.File(path, "r") as f:
        return f["heat/u"][...]


def _ckpt(run, step):
    return os.path.join(run, "checkpoints", checkpoint_name(step))


def _flip(path, name, index, bit):
    """Flip one bit of one value of dataset ``name``, as a failing disk would."""
    with h5py.File(path, "r+") as f:
        d = f[name]
        data = d[...]
        bits = data.reshape(-1).view(f"u{data.dtype.itemsize}")
        bits[index] ^= bits.dtype.type(1 << bit)
        d[...] = data


LIMITED = ("import os, resource, sys; n = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
           "os.execv(sys.executable, [sys.executable, '-m', 'solver', *sys.argv[2:]])")


def _run_limited(args, np_, limit):
    """The solver on ``np_`` ranks whose files cannot grow past ``limit``
    bytes (RLIMIT_FSIZE on the ranks only: mpiexec needs its own files);
    Python ignores SIGXFSZ, so such writes fail with EFBIG or come up short."""
    cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(np_), sys.executable, "-c", LIMITED, str(limit), *args]
    r = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=180)
    r.stderr = without_launcher_report(r.stderr)
    return r


# --- a checkpoint that cannot be stored -------------------------------------------
@pytest.mark.parametrize("np_", [1, 2, 4])
def test_a_checkpoint_past_the_file_size_limit_fails_whole_with_one_line(tmp_path, np_):
    run = str(tmp_path / "run")
    grid = ["--set", "heat.shape=[128,128]", "--backend", "numpy", "--set", "output.keep=0"]
    _ok(run_solver(["run", "--output", run, *grid, "--set", "time.steps=20", "--set", "output.checkpoint_every=10"],
                   np=np_))
    before = _snapshot(run)
    r = _run_limited(["run", "--output", run, "--restart", "latest", "--set", "time.steps=40"], np_, 100_000)
    line = _one_line(r, 1)
    assert "step 30" in line and "File too large" in line, line
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k.startswith("checkpoints")} == \
        {k: v for k, v in before.items() if k.startswith("checkpoints")}       # earlier ones intact, nothing else
    assert not _temporaries(run)


def test_a_restart_onto_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=100"]))
    before = _snapshot(run)
    r = _run_limited(["run", "--output", run, "--restart", "latest", "--set", "time.steps=120"], 1, 300)
    assert "diagnostics.csv" in _one_line(r, 1)
    assert _snapshot(run) == before and not _temporaries(run)


def test_a_short_write_is_found_and_the_checkpoint_abandoned(tmp_path, monkeypatch):
    """MPI-IO may not report a write the file system cut short (Open MPI's
    OMPIO drops it, whatever the status says): the file is read back."""
    from mpi4py import MPI

    from solver.io import blocks, checkpoint
    if not blocks.parallel_io(MPI.COMM_SELF):
        pytest.skip("checkpoints are written through HDF5 here, which reports a short write itself")
    model = make_heat(MPI.COMM_SELF, "heat.shape=[64,64]", "heat.initial=random")
    monkeypatch.setattr(checkpoint, "write_raw", disk_filling_write(checkpoint.write_raw))
    with pytest.raises(OSError, match="not stored whole"):
        checkpoint.write_checkpoint(str(tmp_path), 7, MPI.COMM_SELF, model.checkpoint_attrs(),
                                    model.checkpoint_datasets())
    assert os.listdir(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 5 MiB tmpfs (where this process may mount one)."""
    with small_tmpfs(tmp_path, "5m") as disk:
        yield disk


@pytest.mark.parametrize("np_", [1, 2, 4])
def test_a_full_disk_fails_the_checkpoint_and_the_run_goes_on_once_there_is_room(small_disk, tmp_path, np_):
    """heat 512^2 (2 MiB a checkpoint), one every 100 steps, on 5 MiB."""
    case = ["--set", "heat.shape=[512,512]", "--backend", "numpy", "--set", "output.keep=0",
            "--set", "output.checkpoint_every=100", "--set", "output.log_every=100", "--set", "output.snapshot_every=0"]
    run = str(small_disk / "run")
    line = _one_line(run_solver(["run", "--output", run, *case, "--set", "time.steps=300"], np=np_), 1)
    assert "step 300" in line and "No space left on device" in line, line
    assert _steps(run) == [100, 200] and not _temporaries(run)
    # the disk is still full: the same again, nothing left behind
    line = _one_line(run_solver(["run", "--output", run, "--restart", "latest"], np=np_), 1)
    assert "step 300" in line and _steps(run) == [100, 200] and not _temporaries(run)
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    _ok(run_solver(["run", "--output", run, "--restart", "latest"], np=np_))
    straight = str(tmp_path / "straight")
    _ok(run_solver(["run", "--output", straight, *case, "--set", "time.steps=300"]))
    assert np.array_equal(_field(_ckpt(run, 300)), _field(_ckpt(straight, 300)))


# --- checksums -----------------------------------------------------------------------
def test_the_checksum_does_not_depend_on_the_split_and_sees_any_one_bit():
    from solver.io import checksum
    rng = np.random.default_rng(3)
    for array in (rng.random((40, 30)), rng.random((9, 8, 7)), rng.random((50, 3)).astype(np.float32),
                  np.arange(1000, dtype=np.int64), rng.random(5)):
        whole = checksum.of_array(array)
        cut = array.shape[0] // 3
        parts = [(slice(0, cut),), (slice(cut, array.shape[0]),)]
        if array.ndim > 1:                          # and a cut along the second axis
            k = array.shape[1] // 2
            pieces = [(array[p[0], :k], (p[0], slice(0, k))) for p in parts] + \
                     [(array[p[0], k:], (p[0], slice(k, array.shape[1]))) for p in parts]
        else:
            pieces = [(array[p], p) for p in parts]
        assert sum(checksum.partial(b, array.shape, w) for b, w in pieces) % 2 ** 64 == whole
        flat = array.reshape(-1).view(f"u{array.dtype.itemsize}")
        for bit in range(8 * array.dtype.itemsize):
            flat[1] ^= flat.dtype.type(1 << bit)
            assert checksum.of_array(array) != whole, (array.dtype, bit)
            flat[1] ^= flat.dtype.type(1 << bit)
        flat[[0, 1]] = flat[[1, 0]]                 # two values swapped
        assert checksum.of_array(array) != whole


@pytest.fixture(scope="module")
def straight30(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("straight") / "run")
    _ok(run_solver(["run", "--output", run, *CASE, "--set", "time.steps=30"]))
    return _field(_ckpt(run, 30))


@pytest.mark.parametrize("bit", [62, 0], ids=["exponent", "low-mantissa"])
@pytest.mark.parametrize("np_", [1, 2, 4])
def test_one_flipped_bit_in_the_newest_checkpoint_is_found_by_the_restart(tmp_path, straight30, np_, bit):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *CASE, "--set", "time.steps=20", "--set", "output.checkpoint_every=10"],
                   np=np_))
    newest = _ckpt(run, 20)
    _flip(newest, "heat/u", 37 * 23 // 2, bit)
    line = _one_line(run_solver(["run", "--restart", newest, "--set", "time.steps=30"], np=np_), 2)
    assert "does not match its checksum" in line and "--discard-newer" in line
    assert _steps(run) == [10, 20]                          # named and refused: nothing moved
    r = _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=30"], np=np_))
    [warning] = r.stderr.strip().splitlines()
    assert "do not match their checksums" in warning and "moved aside to step_000000020.h5.damaged" in warning
    assert os.path.exists(newest + ".damaged") and "restart: from " + _ckpt(run, 10) in r.stdout
    assert np.array_equal(_field(_ckpt(run, 30)), straight30)


def test_a_flipped_bit_in_an_nbody_checkpoint_is_found(tmp_path):
    run = str(tmp_path / "run")
    nbody = ["--set", "problem.kind='nbody'", "--set", "nbody.n=9", "--set", "output.checkpoint_every=5"]
    _ok(run_solver(["run", "--output", run, *nbody, "--set", "time.steps=10"], np=2))
    _flip(_ckpt(run, 10), "nbody/velocity", 4, 40)
    r = _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=15"], np=2))
    assert "moved aside" in r.stderr and "restart: from " + _ckpt(run, 5) in r.stdout
    start = tmp_path / "start.h5"
    shutil.copy(_ckpt(run, 5), start)
    _flip(str(start), "nbody/mass", 2, 3)
    line = _one_line(run_solver(["run", "--output", str(tmp_path / "b"), "--set", "problem.kind='nbody'",
                                 "--set", "nbody.initial='file'", "--set", f"nbody.file='{start}'"]), 2)
    assert "nbody.file" in line and "/nbody/mass" in line and "checksum" in line
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("np_", [1, 3])
def test_a_start_field_from_a_damaged_checkpoint_is_refused(tmp_path, np_):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=2"]))
    start = str(tmp_path / "start.h5")
    shutil.copy(_ckpt(run, 2), start)
    _flip(start, "heat/u", 100, 1)
    line = _one_line(run_solver(["run", "--output", str(tmp_path / "a"), *SMALL, "--set", "heat.initial='file'",
                                 "--set", f"heat.file='{start}'"], np=np_), 2)
    assert "heat.file" in line and "checksum" in line and not (tmp_path / "a").exists()


def test_a_checkpoint_without_checksums_still_restarts(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    with h5py.File(_ckpt(run, 10), "r+") as f:            # as written before checksums were stored
        for key in ("checksum", "checksum_algorithm"):
            del f["heat/u"].attrs[key]
    r = _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"], np=2))
    assert r.stderr == "" and _steps(run) == [10, 20]


# --- links the run did not make ------------------------------------------------------------
def test_links_planted_where_checkpoints_and_sidecars_go_are_never_followed(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    ckpt = os.path.join(run, "checkpoints")
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = {os.path.join(ckpt, ".step_000000020.h5.part"), os.path.join(ckpt, "step_000000020.h5"),
               os.path.join(ckpt, ".step_000000020.xdmf.part"), os.path.join(ckpt, "step_000000020.xdmf"),
               os.path.join(run, ".run.xdmf.part"), os.path.join(run, "run.xdmf")}
    targets = {}
    for k, link in enumerate(sorted(planted)):
        target = outside / f"precious{k}"
        target.write_bytes(b"precious")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)
        targets[link] = target
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"]))
    assert all(t.read_bytes() == b"precious" for t in targets.values())
    for final in ("checkpoints/step_000000020.h5", "checkpoints/step_000000020.xdmf", "run.xdmf"):
        assert not os.path.islink(os.path.join(run, final)) and os.path.isfile(os.path.join(run, final))
    assert _field(_ckpt(run, 20)).shape == (32, 32)


def test_a_run_marker_that_is_a_link_is_not_followed(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    target = tmp_path / "empty"
    target.write_bytes(b"")
    marker = os.path.join(run, ".solver-run")
    os.remove(marker)
    os.symlink(target, marker)
    assert "cannot write to the run directory" in _one_line(
        run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"]), 2)
    assert target.read_bytes() == b"" and _steps(run) == [10]


# --- names ---------------------------------------------------------------------------------
def test_steps_past_999999999_are_listed_continued_and_pruned(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10", "--set", "output.keep=2"]))
    old, step = _ckpt(run, 10), 999_999_996
    with h5py.File(old, "r+") as f:                       # as if the run had come that far
        f.attrs["step"] = step
        f.attrs["time_basis"] = [float(step), float(f.attrs["time"])]
        del f.attrs["attrs_checksum"]                     # edited on purpose: no longer claims its checksum
    os.rename(old, _ckpt(run, step))
    os.remove(old[:-3] + ".xdmf")
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=1000000004",
                    "--set", "output.checkpoint_every=2"]))
    assert _steps(run) == [1_000_000_002, 1_000_000_004]
    assert os.path.exists(os.path.join(run, "checkpoints", "step_1000000004.h5"))     # written as it was
    r = _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=1000000006"]))
    assert "restart: from " + _ckpt(run, 1_000_000_004) in r.stdout
    assert checkpoint_name(7) == "step_000000007.h5"


def test_prune_counts_ten_digit_steps(tmp_path):
    for step in (999_999_998, 1_000_000_000, 1_000_000_002):
        with h5py.File(tmp_path / checkpoint_name(step), "w") as f:
            f.attrs["run_id"] = "a"
    prune(str(tmp_path), 1, 1_000_000_002, run_id="a")
    assert sorted(os.listdir(tmp_path)) == ["step_1000000002.h5"]


def test_set_aside_never_replaces_a_file(tmp_path):
    from solver.io.rotation import set_aside
    for k in range(3):
        (tmp_path / "f").write_text(str(k))
        set_aside(str(tmp_path / "f"), "damaged")
    assert sorted(os.listdir(tmp_path)) == ["f.damaged", "f.damaged.2", "f.damaged.3"]
    assert [(tmp_path / n).read_text() for n in ("f.damaged", "f.damaged.2", "f.damaged.3")] == ["0", "1", "2"]


def test_a_second_damage_of_one_step_keeps_both_damaged_files(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=20", "--set", "output.checkpoint_every=10"]))
    newest = _ckpt(run, 20)
    for size in (100, 200):
        with open(newest, "r+b") as fh:
            fh.truncate(size)
        _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"]))
    assert os.path.getsize(newest + ".damaged") == 100 and os.path.getsize(newest + ".damaged.2") == 200
    assert os.path.exists(newest[:-3] + ".xdmf.damaged.2") and _steps(run) == [10, 20]


# --- dead ends --------------------------------------------------------------------------------
def test_a_run_killed_in_its_first_checkpoint_can_be_started_again(tmp_path):
    run = str(tmp_path / "run")
    args = ["run", "--output", run, *SMALL, "--set", "time.steps=20", "--set", "output.checkpoint_every=10"]
    proc = subprocess.Popen(solver_cmd(args, 1), cwd=REPO, env=clean_env({"SOLVER_TEST_SLOW_WRITE": "120"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ckpt = os.path.join(run, "checkpoints")
        while not (os.path.isdir(ckpt) and any(n.endswith(".part") for n in os.listdir(ckpt))):
            assert time.monotonic() < deadline and proc.poll() is None, "the first checkpoint never began"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        proc.wait(timeout=30)
    left = _temporaries(run)
    assert left and _steps(run) == []
    line = _one_line(run_solver(["run", "--output", run, "--restart", "latest"]), 2)
    assert "no complete checkpoint" in line and "start it again without --restart" in line
    _ok(run_solver(args))
    assert _steps(run) == [10, 20] and all(os.path.exists(p) for p in left)        # not ours to delete
    assert os.path.exists(os.path.join(run, "diagnostics.csv.abandoned"))


def test_a_newest_checkpoint_not_trusted_is_passed_over_with_discard_newer(tmp_path):
    from solver.io import checksum
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *CASE, "--set", "time.steps=30", "--set", "output.checkpoint_every=10",
                    "--set", "output.keep=0"]))
    with h5py.File(_ckpt(run, 30), "r+") as f:         # a NaN written with the file, checksum and all
        u = f["heat/u"][...]
        u[5, 5] = np.nan
        f["heat/u"][...] = u
        f["heat/u"].attrs["checksum"] = np.uint64(checksum.of_array(u))
    line = _one_line(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=40"]), 2)
    assert "not finite" in line and "--discard-newer" in line
    line = _one_line(run_solver(["run", "--restart", _ckpt(run, 20), "--set", "time.steps=40"]), 2)
    assert "older than the newest" in line and "--discard-newer" in line
    assert _steps(run) == [10, 20, 30]
    r = _ok(run_solver(["run", "--restart", _ckpt(run, 20), "--discard-newer", "--set", "time.steps=40"], np=2))
    assert "moved aside to step_000000030.h5.discarded" in r.stderr
    assert _steps(run) == [10, 20, 30, 40] and os.path.exists(_ckpt(run, 30) + ".discarded")
    straight = str(tmp_path / "straight")
    _ok(run_solver(["run", "--output", straight, *CASE, "--set", "time.steps=40"]))
    assert np.array_equal(_field(_ckpt(run, 40)), _field(_ckpt(straight, 40)))
    with open(os.path.join(run, "diagnostics.csv")) as fh:
        steps = [int(line.split(",")[0]) for line in fh.read().splitlines()[1:]]
    assert steps == list(range(0, 41, 10))


def test_discard_newer_needs_a_restart_in_the_runs_own_directory(tmp_path):
    assert "--restart" in _one_line(run_solver(["run", "--output", str(tmp_path / "x"), *SMALL,
                                                "--discard-newer"]), 2)
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    before = _snapshot(run)
    assert "--discard-newer" in _one_line(run_solver(["run", "--restart", _ckpt(run, 10), "--discard-newer",
                                                      "--output", str(tmp_path / "branch")]), 2)
    assert _snapshot(run) == before and not (tmp_path / "branch").exists()


# --- nothing written on bad input -------------------------------------------------------------
def test_bad_input_after_the_claim_removes_every_directory_the_claim_made(tmp_path):
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "new" / "deeper" / "run", tmp_path / "kept" / "new" / "run"):
        _one_line(run_solver(["run", "--output", str(out), *SMALL, "--set", "time.dt=1.0"]), 2)
    assert sorted(os.listdir(tmp_path)) == ["kept"] and os.listdir(tmp_path / "kept") == []


def test_a_bad_input_restart_moves_nothing_aside(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=20", "--set", "output.checkpoint_every=10"]))
    with open(_ckpt(run, 20), "r+b") as fh:
        fh.truncate(100)
    before = _snapshot(run)
    line = _one_line(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=30",
                                 "--set", "time.dt=1.0"]), 2)
    assert "time.dt" in line and _snapshot(run) == before
