"""The device kernels of kernels/: one source, compiled by nvcc for NVIDIA
GPUs (the cuda backend's compile path) and run by OpenCL (in CI on PoCL)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from solver import kernels
from solver.backends import cuda, status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.timeout(600)
needs_nvcc = pytest.mark.skipif(cuda.nvcc() is None, reason="nvcc is not on PATH")


@needs_nvcc
@pytest.mark.parametrize("arch", cuda.ARCHS)
@pytest.mark.parametrize("real", ["double", "float"])
@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_nvcc_compiles_every_kernel_without_warnings(family, real, arch):
    cubin = cuda.compile_cubin(kernels.source("cuda", real, (family,)), arch)
    assert cubin[:4] == b"\x7fELF"


@needs_nvcc
def test_nvcc_failure_is_reported_with_its_messages():
    bad = kernels.source("cuda", "double", ("heat",)) + "KERNEL void broken(GLOBAL real* u) { u[0] = undefined; }\n"
    with pytest.raises(cuda.CompileError, match="undefined"):
        cuda.compile_cubin(bad, "sm_90")


def test_nvcc_unused_variable_is_an_error():
    """Warnings are errors: a kernel that compiles with a warning fails CI."""
    if cuda.nvcc() is None:
        pytest.skip("nvcc is not on PATH")
    warn = kernels.source("cuda", "double", ("heat",)) + "KERNEL void warns(GLOBAL real* u) { int unused; u[0] = 1; }\n"
    with pytest.raises(cuda.CompileError):
        cuda.compile_cubin(warn, "sm_90")


def test_the_cuda_backend_says_why_it_cannot_run():
    """Where cuda is not usable, the backend says why (on a GPU host it is usable)."""
    ok, why = status()["cuda"]
    assert ok or why


def test_an_unknown_dialect_or_type_is_refused():
    with pytest.raises(ValueError, match="dialect"):
        kernels.source("metal")
    with pytest.raises(ValueError, match="real"):
        kernels.source("opencl", "half")


@pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")
def test_box_stats_reduces_on_the_device():
    """Sum, min, max and the non-finite count of a box, per work group."""
    import pyopencl as cl

    from solver.backends import opencl
    prg, queue = opencl._program("double")
    rng = np.random.default_rng(3)
    u = rng.normal(size=(9, 21, 13))
    u[4, 7, 5] = np.nan
    lo, hi = (1, 2, 3), (8, 19, 12)
    m = [h - l for l, h in zip(lo, hi)]
    count = int(np.prod(m))
    group = kernels.CONSTANTS["GROUP"]
    groups = -(-count // group)
    ctx = opencl._state["context"]
    bu = cl.Buffer(ctx, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=u)
    partial = np.empty((groups, 4))
    bp = cl.Buffer(ctx, cl.mem_flags.WRITE_ONLY, partial.nbytes)
    prg.box_stats(queue, (groups * group,), (group,), bu, np.int64(21), np.int64(13), *map(np.int64, lo),
                  np.int64(m[1]), np.int64(m[2]), np.int64(count), bp)
    cl.enqueue_copy(queue, partial, bp)
    box = u[1:8, 2:19, 3:12]
    finite = box[np.isfinite(box)]
    assert partial[:, 3].sum() == 1
    assert np.nanmin(partial[:, 1]) == finite.min() and np.nanmax(partial[:, 2]) == finite.max()


@pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")
def test_float32_forces_on_the_device_agree_within_1e_5():
    from solver.backends import numpy_ as ref
    from solver.backends import opencl
    rng = np.random.default_rng(5)
    x, m = rng.normal(size=(600, 3)).astype(np.float32), rng.uniform(0.1, 1.0, 600).astype(np.float32)
    a = np.zeros((600, 3), np.float32)
    b = np.zeros((600, 3))
    assert opencl.nbody_accel(x, x, m, 0, 1e-4, 1.0, a, i0=0) == 0
    ref.nbody_accel(x.astype(np.float64), x.astype(np.float64), m.astype(np.float64), 0, 1e-4, 1.0, b, i0=0)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


# --- the cuda backend without a driver: PyCUDA built against a stub libcuda -----
STUB_DIR = os.path.join(sys.prefix, "lib", "solver-cuda-stub")
needs_stub = pytest.mark.skipif(not os.path.exists(os.path.join(STUB_DIR, "libcuda.so.1")),
                                reason="no PyCUDA built against the driver stub (make setup builds one)")


def _with_stub(code):
    env = {**os.environ, "LD_LIBRARY_PATH": STUB_DIR + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)


@needs_stub
def test_without_a_driver_pycuda_raises_a_clean_logic_error():
    out = _with_stub("import pycuda.driver as d\ntry:\n    d.init()\nexcept d.LogicError as e:\n    print('LogicError', e)")
    assert out.returncode == 0, out.stderr
    assert "LogicError" in out.stdout and "STUB" in out.stdout.upper()


@needs_stub
def test_without_a_driver_the_cuda_backend_says_why():
    out = _with_stub("from solver.backends import status; print(status()['cuda'])")
    assert out.returncode == 0, out.stderr
    assert "(False, 'no usable CUDA driver" in out.stdout


@needs_stub
def test_backend_cuda_without_a_driver_is_one_line_and_exit_2(tmp_path):
    out = _with_stub(f"import sys; sys.argv = ['solver', '--backend', 'cuda', '--output', {str(tmp_path / 'r')!r}]; "
                     "from solver.cli import main; sys.exit(main())")
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend 'cuda' is not available here (no usable CUDA driver" in lines[0]
    assert not (tmp_path / "r").exists()


@needs_stub
@needs_nvcc
@pytest.mark.parametrize("real", ["double", "float"])
def test_nvcc_through_pycuda_compiles_every_kernel_for_sm_90(real):
    """PyCUDA's own compile path (what the backend uses at run time), without a device."""
    out = _with_stub(f"from pycuda.compiler import compile; from solver import kernels; "
                     f"b = compile(kernels.source('cuda', {real!r}), target='cubin', arch='sm_90', "
                     f"options=['--fmad=false'], no_extern_c=True); print(b[:4] == b'\\x7fELF')")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


@pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")
@pytest.mark.parametrize("np_", [None, 2])
def test_a_device_that_is_not_there_is_one_line_and_exit_2(tmp_path, np_):
    from conftest import run_solver
    r = run_solver(["--backend", "opencl", "--set", "backend.device=7", "--set", "time.steps=2",
                    "--output", str(tmp_path / "r")], np=np_)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend.device: there is no OpenCL device 7" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")
def test_gpu_aware_mpi_on_a_backend_without_device_buffers_is_refused(tmp_path):
    from conftest import run_solver
    r = run_solver(["--backend", "opencl", "--set", "backend.gpu_aware_mpi=true", "--set", "time.steps=2",
                    "--output", str(tmp_path / "r")], np=2)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend.gpu_aware_mpi: the opencl backend has no device buffers" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")
def test_float32_bodies_on_the_device_follow_the_reference():
    """nbody.precision = float32 runs the float32 kernels: a Plummer sphere
    after 20 steps agrees with the reference's float32 run to 1e-5."""
    from mpi4py import MPI

    from helpers import make_nbody, run_to_end
    args = ("nbody.n=300", "nbody.precision=float32", "time.steps=20", "time.dt=0.001")
    a = run_to_end(make_nbody(MPI.COMM_SELF, *args, backend="opencl"))
    b = run_to_end(make_nbody(MPI.COMM_SELF, *args, backend="numpy"))
    assert a.x.dtype == np.float32
    assert np.abs(a.x - b.x).max() <= 1e-5 * np.abs(b.x).max()
