"""A test double of ``pycuda.compiler``: as PyCUDA's, ``compile`` runs
the ``nvcc`` found on PATH (tests/cuda_sim/bin/nvcc, which makes an image
of the simulated driver) and ``SourceModule`` loads what it made."""
from __future__ import annotations

import os
import subprocess
import tempfile

from . import driver


def compile(source, nvcc="nvcc", options=None, keep=False, no_extern_c=False, arch=None, code=None,   # noqa: A001
            cache_dir=None, include_dirs=(), target="cubin"):
    if not no_extern_c:
        source = 'extern "C" {\n' + source + "\n}\n"
    opts = list(options or ()) + [f"-I{d}" for d in include_dirs or ()]
    with tempfile.TemporaryDirectory(prefix="cuda-sim-") as tmp:
        src, out = os.path.join(tmp, "kernel.cu"), os.path.join(tmp, "kernel." + target)
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(source)
        try:
            done = subprocess.run([nvcc, f"-{target}", *opts, "-o", out, src], capture_output=True, text=True)
        except OSError as exc:          # PyCUDA: pytools.prefork.ExecError
            raise driver.CompileError(f"error invoking '{nvcc} --version': {exc}") from None
        if done.returncode:
            raise driver.CompileError(f"nvcc compilation of {src} failed\n{done.stderr}")
        with open(out, "rb") as fh:
            return fh.read()


class SourceModule:
    def __init__(self, source, nvcc="nvcc", options=None, keep=False, no_extern_c=False, arch=None, code=None,
                 cache_dir=None, include_dirs=()):
        self.module = driver.module_from_buffer(compile(source, nvcc, options, keep, no_extern_c, arch, code,
                                                        cache_dir, include_dirs))

    def get_function(self, name):
        return self.module.get_function(name)
