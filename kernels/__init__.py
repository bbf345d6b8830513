"""Device kernel sources, written once in a small dialect (KERNEL, GLOBAL,
LOCAL, LOCAL_PTR (a pointer parameter to local memory), RESTRICT, BARRIER, GLOBAL_ID(d), LOCAL_ID(d), GROUP_ID(d),
LOCAL_SIZE(d), DEVICE, SQRT and a ``real`` type) that a CUDA or an OpenCL
prelude defines, as OpenMM's common platform does: CI runs the very source
that runs on NVIDIA GPUs (OpenCL on PoCL), and nvcc compiles it too.

``source(dialect, real, families)`` is the whole program text for one
compilation: the prelude, the constants, then each family's file.
"""
from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
DIALECTS = ("cuda", "opencl")
FAMILIES = ("heat", "halo", "nbody", "reduce")
# constants every kernel may use: the n-body tile (the same fixed tiles of
# global ids as the CPU backends) and the reduction's work-group size
CONSTANTS = {"TILE": 256, "GROUP": 256}


def read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        return fh.read()


def source(dialect: str, real: str = "double", families=FAMILIES) -> str:
    """The program text of ``families`` in ``dialect`` with ``real`` as the float type."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown kernel dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    if real not in ("float", "double"):
        raise ValueError(f"real must be float or double, got {real!r}")
    head = [read(f"prelude_{dialect}.h"), f"typedef {real} real;"]
    head += [f"#define {k} {v}" for k, v in CONSTANTS.items()]
    return "\n".join(head + [read(f"{family}.h") for family in families]) + "\n"
