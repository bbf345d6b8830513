"""The cuda backend on the simulated driver (tests/cuda_sim): its host
logic, stream ordering and kernels, without a GPU.  The reference tests of
test_backends.py and test_kernels.py run here on cuda, and the defects a
GPU host would meet have a test each."""
import os
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

import test_backends as tb
from cuda_sim.fixture import cuda_sim  # noqa: F401  (the fixture)
from helpers import make_heat, make_nbody, run_to_end

pytestmark = pytest.mark.timeout(300)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cuda(cuda_sim):        # noqa: F811
    from solver.backends import cuda
    return cuda


# --- the backend reference tests, on cuda -------------------------------------------
def test_cuda_sim_makes_cuda_one_of_the_compiled_backends(cuda_sim, monkeypatch):   # noqa: F811
    """Where cuda is usable, the backend tests include it, auto picks it,
    and the kernel tests that expect no cuda pass on such a host too."""
    import test_kernels
    from solver.backends import get_backend
    assert "cuda" in tb.compiled()
    assert get_backend("auto").name == "cuda"
    monkeypatch.setattr(tb, "COMPILED", tb.compiled())
    tb.test_auto_prefers_a_compiled_backend_when_there_is_one()
    test_kernels.test_the_cuda_backend_says_why_it_cannot_run()


@pytest.mark.parametrize("walls", [*tb.WALLS, "mixed"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11], [7, 83, 5]])
@pytest.mark.parametrize("fused", [0, 1, 5])
@pytest.mark.parametrize("variable", [False, True])
def test_cuda_sim_heat_is_bitwise_equal_to_the_reference(cuda, walls, shape, fused, variable, tmp_path):
    tb.test_heat_is_bitwise_equal_to_the_reference("cuda", walls, shape, fused, variable, tmp_path)


@pytest.mark.parametrize("boundary", ["dirichlet", "neumann", "robin"])
def test_cuda_sim_deep_sweeps_never_reach_past_a_wall(cuda, boundary):
    tb.test_deep_sweeps_never_reach_past_a_wall("cuda", boundary, 24)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("variable", [False, True])
def test_cuda_sim_fused_boxes_are_bitwise_equal_to_the_reference(cuda, ndim, variable, monkeypatch):
    tb.test_fused_boxes_are_bitwise_equal_to_the_reference("cuda", ndim, variable, monkeypatch)


def test_cuda_sim_nbody_kernels_agree_with_the_reference(cuda):
    tb.test_nbody_kernels_agree_with_the_reference("cuda")
    tb.test_coincident_bodies_are_detected("cuda")


def test_cuda_sim_nbody_trajectories_agree_with_the_reference(cuda):
    tb.test_nbody_trajectories_agree_with_the_reference("cuda")


def test_cuda_sim_float32_bodies_follow_the_reference(cuda):
    """nbody.precision = float32 runs the float32 kernels: a Plummer sphere
    after 20 steps agrees with the reference's float32 run to 1e-5."""
    args = ("nbody.n=300", "nbody.precision=float32", "time.steps=20", "time.dt=0.001")
    a = run_to_end(make_nbody(MPI.COMM_SELF, *args, backend="cuda"))
    b = run_to_end(make_nbody(MPI.COMM_SELF, *args, backend="numpy"))
    assert a.x.dtype == np.float32
    assert np.abs(a.x - b.x).max() <= 1e-5 * np.abs(b.x).max()


# --- 1. grid limits ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [[66000, 2], [66000, 2, 2], [2, 66000, 2]])
def test_cuda_sim_blocks_longer_than_the_grid_limit_run(cuda, shape):
    """More than 65535 rows (2-D) or planes or rows (3-D): launches fold or
    split within CUDA's grid y and z limit, and the bits stay the reference's."""
    args = (f"heat.shape={shape}", "heat.initial=random", "heat.boundary=dirichlet", "heat.boundary_value=0.5",
            "time.steps=3", "heat.fused_steps=3")
    a = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="cuda")).local_field()
    b = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="numpy")).local_field()
    assert np.array_equal(a, b)


def test_cuda_sim_thin_boxes_get_full_blocks_along_a_long_axis(cuda_sim, cuda):       # noqa: F811
    """Every heat launch over a box of at least 128 cells has at least 128
    threads per block (a border box 2 cells thin included)."""
    cuda_sim.driver.trace = []
    args = ("heat.shape=[9,300,4]", "heat.initial=random", "heat.boundary=periodic", "time.steps=4")
    run_to_end(make_heat(MPI.COMM_SELF, *args, backend="cuda"))
    launches = [e for e in cuda_sim.driver.trace if e[0] == "launch" and e[1].startswith(("heat_step", "heat_wall"))]
    assert launches
    for _, kernel, grid, block, _ in launches:
        cells = np.prod(grid) * np.prod(block)
        if cells >= 256:
            assert np.prod(block) >= 128, (kernel, grid, block)


# --- 2. no toolkit at run time ------------------------------------------------------
def _no_nvcc(monkeypatch, cuda_sim):        # noqa: F811
    """PATH without any nvcc (the simulator's or a real one)."""
    cuda_sim.install(nvcc_on_path=False)
    keep = [d for d in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(d, "nvcc"))]
    monkeypatch.setenv("PATH", os.pathsep.join(keep))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)


def test_cuda_sim_kernels_load_without_nvcc_from_images_built_with_the_package(cuda, cuda_sim, tmp_path,  # noqa: F811
                                                                             monkeypatch):
    """The package's build compiles the images (here by the simulator's
    nvcc); on a node with a driver and no toolkit, --backend cuda loads them."""
    images = tmp_path / "images"
    monkeypatch.setattr(cuda, "IMAGES", str(images))
    built = cuda.build_images(str(images))
    assert len(built) == len(cuda.BUILDS)
    _no_nvcc(monkeypatch, cuda_sim)
    assert cuda.nvcc() is None
    from solver.backends import status
    assert status()["cuda"] == (True, "")
    args = ("heat.shape=[19,13,11]", "heat.initial=random", "time.steps=4")
    a = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="cuda")).local_field()
    b = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="numpy")).local_field()
    assert np.array_equal(a, b)


def test_cuda_sim_without_images_or_nvcc_auto_does_not_pick_cuda(cuda, cuda_sim, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cuda, "IMAGES", str(tmp_path / "none"))
    _no_nvcc(monkeypatch, cuda_sim)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from solver.backends import get_backend, status
    ok, why = status()["cuda"]
    assert not ok and "no kernel image" in why and "nvcc" in why
    assert get_backend("auto").name != "cuda"


# --- 3. the compile cache ------------------------------------------------------------
def test_cuda_sim_images_compiled_at_run_time_go_to_our_cache_complete(cuda, tmp_path, monkeypatch):
    """nvcc's output is written under a temporary name and renamed into
    place in the solver's own cache; a partly written file under a
    temporary name is never loaded."""
    monkeypatch.setattr(cuda, "IMAGES", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "solver" / "cuda"
    folder.mkdir(parents=True)
    (folder / (cuda.image_name("double") + ".tmp-half")).write_bytes(b"CUDA-SIM-IMAGE\nhalf")
    cuda._program("double").heat_wall                       # loads the double kernels
    names = sorted(os.listdir(folder))
    assert cuda.image_name("double") in names
    assert (folder / cuda.image_name("double")).read_bytes() == cuda.image("double")
    assert all(n in (cuda.image_name("double"), cuda.image_name("double") + ".tmp-half") for n in names)


def test_cuda_sim_ranks_compiling_at_once_each_load_a_whole_image(tmp_path):
    """Four processes start from an empty cache at the same moment, with an
    nvcc that writes its output in two halves: each loads a whole image."""
    slow = tmp_path / "bin"
    slow.mkdir()
    real = os.path.join(REPO, "tests", "cuda_sim", "bin", "nvcc")
    (slow / "nvcc").write_text(f"#!/bin/sh\n{sys.executable} {real} \"$@\" || exit 1\n"
                               "for a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\n"
                               "cp \"$out\" \"$out.full\"; head -c 20 \"$out.full\" > \"$out\"; sleep 0.3; "
                               "cat \"$out.full\" > \"$out\"\n")
    (slow / "nvcc").chmod(0o755)
    start = tmp_path / "go"
    code = ("import os, sys, time; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
            "import cuda_sim; cuda_sim.install(nvcc_on_path=False)\n"
            "os.environ['PATH'] = %r + os.pathsep + os.environ['PATH']; os.environ['XDG_CACHE_HOME'] = %r\n"
            "from solver.backends import cuda; cuda.IMAGES = %r\n"
            "while not os.path.exists(%r): time.sleep(0.01)\n"
            "cuda._program('double').heat_wall; print('loaded')\n") % (
        REPO, os.path.join(REPO, "tests"), str(slow), str(tmp_path / "cache"), str(tmp_path / "none"), str(start))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    start.write_text("")
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and out.strip() == "loaded", err[-2000:]


def test_cuda_sim_run_time_compiles_treat_warnings_as_errors(cuda, tmp_path, monkeypatch):
    """What the module's docstring promises: nvcc at run time gets
    -Werror all-warnings and --fmad=false, and builds for every target."""
    monkeypatch.setattr(cuda, "IMAGES", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CUDA_SIM_NVCC_LOG", str(tmp_path / "nvcc.log"))
    cuda._program("double").heat_wall
    line = (tmp_path / "nvcc.log").read_text().splitlines()[0].split()
    assert "-Werror" in line and "all-warnings" in line and "--fmad=false" in line and "-fatbin" in line
    assert {"code=sm_80", "code=sm_90", "code=compute_90"} <= {a.split(",")[-1] for a in line}


# --- 6. smaller defects --------------------------------------------------------------
def test_cuda_sim_halo_buffers_come_after_the_context(cuda):
    """Page-locked memory belongs to a context: the first call makes it."""
    buf = cuda.halo_buffer((3, 4), np.float64)
    assert buf.shape == (3, 4)


def test_cuda_sim_too_little_device_memory_is_one_line_before_allocating(tmp_path):
    import cuda_sim
    out = subprocess.run(cuda_sim.solver_command(["--set", "heat.shape=[400,400]", "--set", "time.steps=2",
                                                  "--backend", "cuda", "--output", str(tmp_path / "r")]),
                         capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "CUDA_SIM_MEMORY": str(3 * 402 * 402 * 8),
                              "PYTHONPATH": REPO + os.pathsep + os.path.join(REPO, "tests")})
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "device memory:" in lines[0] and "GiB free of" in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_cuda_sim_gpu_aware_mpi_needs_a_cuda_aware_mpi(cuda, monkeypatch):
    from solver.backends import get_backend
    from solver.config import ConfigError
    monkeypatch.setattr(MPI, "Query_cuda_support", lambda: False, raising=False)
    with pytest.raises(ConfigError, match="not CUDA-aware"):
        get_backend("cuda", MPI.COMM_SELF, gpu_aware_mpi=True)
    monkeypatch.setattr(MPI, "Query_cuda_support", lambda: True, raising=False)
    assert get_backend("cuda", MPI.COMM_SELF, gpu_aware_mpi=True).messages_on_device()


def test_cuda_sim_scratch_levels_are_not_freed_under_queued_kernels(cuda):
    """Many block shapes (the scratch levels are dropped past four), their
    sweeps queued back to back: dropping the levels must not free memory
    that queued kernels still use (cuMemFree is not promised to wait)."""
    from solver.backends import numpy_ as ref
    rng = np.random.default_rng(2)
    cases = []
    for n in range(5, 13):                   # everything on the device first: copies in wait for all work
        shape = (n + 4, 9)
        stencil = tb._stencil(cuda, rng, shape, 2, False)
        src = rng.random(shape)
        cases.append((shape, n, stencil, tb._host(cuda, stencil), src, cuda.from_host(src),
                      cuda.from_host(np.zeros(shape))))
    for shape, n, stencil, _, _, src, out in cases:
        cuda.heat_fused(src, out, stencil, 2, [2, 2], [n + 2, 7], [False] * 4)
    for shape, n, _, expected, src, _, out in cases:
        b = np.zeros(shape)
        ref.heat_fused(src, b, expected, 2, [2, 2], [n + 2, 7], [False] * 4)
        assert np.array_equal(cuda.to_host(out), b)


def test_cuda_sim_halo_traffic_makes_no_timed_events(cuda_sim, cuda):      # noqa: F811
    args = ("heat.shape=[19,13,11]", "heat.initial=random", "heat.boundary=periodic", "time.steps=6")
    run_to_end(make_heat(MPI.COMM_SELF, *args, backend="cuda"))
    shape = (5, 6)
    u = cuda.from_host(np.arange(30.0).reshape(shape))
    buf = cuda.halo_buffer((1, 6), np.float64)
    cuda_sim.reset_counts()
    cuda.pack(u, (slice(1, 2), slice(0, 6)), buf)
    cuda.unpack(buf, u, (slice(0, 1), slice(0, 6)))
    assert cuda_sim.counts["events"] > 0 and cuda_sim.counts["timed_events"] == 0
    assert np.array_equal(cuda.to_host(u)[0], np.arange(6.0, 12.0))


# --- 5. availability agreed before any other collective ------------------------------
def test_cuda_sim_a_rank_without_cuda_stops_every_rank_with_one_line(tmp_path):
    """Rank 1's cuda is not available (its available() says so), rank 0's
    is: every rank stops with the same one line, exit 2, nothing written,
    instead of rank 0 waiting in the device choice's collective."""
    from conftest import clean_env, without_launcher_report
    code = ("import sys; sys.path.insert(0, %r); import cuda_sim; cuda_sim.install()\n"
            "from mpi4py import MPI\n"
            "from solver.backends import cuda\n"
            "if MPI.COMM_WORLD.rank == 1:\n"
            "    cuda.available = lambda: (False, 'no CUDA device is visible on this node')\n"
            "from solver.cli import main\n"
            "sys.exit(main(['--backend', 'cuda', '--set', 'time.steps=2', '--output', %r]))\n") % (
        os.path.join(REPO, "tests"), str(tmp_path / "r"))
    import shutil
    try:
        out = subprocess.run([shutil.which("mpiexec") or "mpiexec", "-n", "2", sys.executable, "-m", "mpi4py", "-c",
                              code], capture_output=True, text=True, timeout=90, cwd=REPO, env=clean_env())
    except subprocess.TimeoutExpired:
        pytest.fail("the ranks did not stop: one waits in a collective the other never enters")
    lines = without_launcher_report(out.stderr).strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and "backend 'cuda' is not available on rank 1 (no CUDA device is visible" in lines[0], lines
    assert not (tmp_path / "r").exists()
