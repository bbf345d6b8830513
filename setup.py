"""Packaging lives in pyproject.toml; this adds one build step: the cuda
backend's kernel images (cubins for sm_80 and sm_90, PTX for newer GPUs),
compiled by nvcc where the package is built, so that a GPU node with a
driver and no CUDA toolkit runs them (solver/backends/cuda.py).  Without
nvcc here the package builds as before, and the backend compiles at run
time where nvcc is found."""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithCudaKernels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return                                   # a development tree compiles into its cache when needed
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from solver.backends import cuda
        if cuda.nvcc() is None:
            self.announce("nvcc not found: no prebuilt cuda kernels in this build", level=3)
            return
        for path in cuda.build_images(os.path.join(self.build_lib, "solver", "kernels", "cuda")):
            self.announce(f"cuda kernels: {path}", level=3)


setup(cmdclass={"build_py": BuildWithCudaKernels})
