"""The simulated CUDA driver: a test double of the part of ``pycuda.driver``
and ``pycuda.compiler`` that the cuda backend uses, and of ``nvcc``
(bin/nvcc), that runs the real kernel source on the host (see driver.py).

It proves the backend's host logic, its stream ordering and its kernels'
semantics (blocks, barriers, shared memory, launch limits, argument
types, out-of-bounds writes); it says nothing about speed on a GPU.

    import cuda_sim
    cuda_sim.install()          # pycuda.driver, pycuda.compiler and nvcc are now the simulator's
    ...
    cuda_sim.counts             # launches, host_syncs, htod, dtoh, ... since cuda_sim.reset_counts()
    cuda_sim.uninstall()

For a subprocess (``python -m solver`` under test): ``python -c "import
cuda_sim; cuda_sim.install(); ..."`` with tests/ on PYTHONPATH, or
``cuda_sim.run_module_code()`` (see solver_command).
"""
from __future__ import annotations

import os
import sys
import types

from . import compiler, driver, kernelc

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "bin")
_saved: dict = {}


def __getattr__(name):
    if name == "counts":
        return driver.counts
    raise AttributeError(name)


def reset_counts():
    driver.reset_counts()


def install(nvcc_on_path=True):
    """Make ``import pycuda.driver`` (and .compiler) give the simulator, put
    its nvcc first on PATH (unless ``nvcc_on_path`` is false) and forget any
    state the cuda backend kept from another driver."""
    if "pycuda" not in _saved:
        _saved["pycuda"] = {k: sys.modules.get(k) for k in ("pycuda", "pycuda.driver", "pycuda.compiler")}
        _saved["PATH"] = os.environ.get("PATH", "")
        _saved["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME")
    package = types.ModuleType("pycuda")
    package.__path__ = []
    package.driver, package.compiler = driver, compiler
    package.VERSION = (2026, 1)
    sys.modules.update({"pycuda": package, "pycuda.driver": driver, "pycuda.compiler": compiler})
    path = _saved["PATH"]
    os.environ["PATH"] = BIN + os.pathsep + path if nvcc_on_path else path
    # kernel images the backend compiles go to a cache of the simulator's, not the user's
    os.environ["XDG_CACHE_HOME"] = os.path.join(kernelc.cache_dir(), "xdg-cache")
    forget_backend_state()


def uninstall():
    if "pycuda" not in _saved:
        return
    forget_backend_state()
    for k, mod in _saved.pop("pycuda").items():
        if mod is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = mod
    os.environ["PATH"] = _saved.pop("PATH")
    cache = _saved.pop("XDG_CACHE_HOME")
    if cache is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = cache


def forget_backend_state():
    """The cuda backend keeps its context, streams and modules per process: start it afresh."""
    cuda = sys.modules.get("solver.backends.cuda")
    if cuda is not None and hasattr(cuda, "forget"):
        cuda.forget()
    driver.reset()


def solver_command(args):
    """argv that runs ``python -m solver ARGS`` on the simulated driver."""
    code = ("import sys; sys.path.insert(0, %r); import cuda_sim; cuda_sim.install(); "
            "from solver.cli import main; sys.argv = ['solver'] + sys.argv[1:]; sys.exit(main())") % os.path.dirname(HERE)
    return [sys.executable, "-c", code, *args]
