"""CUDA backend: the device kernels of ``kernels/`` compiled by nvcc.

In this version the backend compiles every kernel for NVIDIA GPUs (the
same source the ``opencl`` backend runs, so CI checks both) but does not
run them yet: running needs PyCUDA, a driver and a device, and is reported
as not available.  Kernels are compiled with ``--fmad=false`` so that the
device rounds like the NumPy reference, and with warnings as errors.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

name = "cuda"
ARCHS = ("sm_80", "sm_90")                  # A100, H100/H200
OPTIONS = ("--fmad=false", "-Werror", "all-warnings")


def available():
    try:
        import pycuda  # noqa: F401
    except ImportError as exc:
        return False, f"pycuda is not installed ({exc}); pip install .[cuda]"
    return False, "running kernels on CUDA devices is not part of this version (they are compiled and tested)"


def nvcc() -> str | None:
    """The nvcc to use: on PATH, else under CUDA_HOME or CUDA_PATH."""
    found = shutil.which("nvcc")
    if found:
        return found
    for var in ("CUDA_HOME", "CUDA_PATH"):
        candidate = os.path.join(os.environ.get(var, ""), "bin", "nvcc")
        if os.environ.get(var) and os.access(candidate, os.X_OK):
            return candidate
    return None


class CompileError(RuntimeError):
    """nvcc refused a kernel source (its messages are in the text)."""


def compile_cubin(source: str, arch: str = "sm_90") -> bytes:
    """The cubin of ``source`` (a whole program from ``kernels.source``) for ``arch``."""
    compiler = nvcc()
    if compiler is None:
        raise CompileError("nvcc not found: put the CUDA toolkit's bin on PATH or set CUDA_HOME "
                           "(pip's cuda-toolkit[nvcc] brings one)")
    with tempfile.TemporaryDirectory(prefix="solver-nvcc-") as tmp:
        src, out = os.path.join(tmp, "kernels.cu"), os.path.join(tmp, "kernels.cubin")
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(source)
        done = subprocess.run([compiler, "-cubin", f"-arch={arch}", *OPTIONS, "-o", out, src],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise CompileError(f"nvcc -arch={arch} failed:\n{done.stdout}{done.stderr}")
        with open(out, "rb") as fh:
            return fh.read()
