"""``bench sass``: what one pair interaction costs in the CUDA n-body
kernels, counted in the machine code (SASS) without a GPU.

The n-body program is compiled as the cuda backend compiles it (its source
and NBODY_OPTIONS, by nvcc) to a cubin for sm_90, and disassembled by
``nvdisasm`` (the ``nvidia-cuda-nvdisasm`` wheel: ``pip install .[sass]``).
In each kernel the pair loop is the innermost loop (a backward branch with
no other loop inside) holding the most reciprocal square roots (MUFU.RSQ,
one per pair); its instructions, branch included, divided by its
MUFU.RSQ count are the instructions per interaction.  At 20 flops a pair,
16 instructions a pair is about 60% of the float32 peak if latency is
hidden (an SM issues 4 warp instructions a cycle, 128 FP32 lanes)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

GOAL = 16                       # instructions per pair of the float force loop on sm_90
ARCH = "sm_90"
KERNELS = ("nbody_accel_part", "nbody_accel_jerk_part")

_FUNCTION = re.compile(r"^\s*\.text\.(\w+):")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_INSTRUCTION = re.compile(r"/\*[0-9a-f]+\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA\b[^`]*`\((\.L_x_\d+)\)")


@dataclass
class Loop:
    instructions: int
    pairs: int                   # MUFU.RSQ in the loop
    text: list

    @property
    def per_pair(self) -> float:
        return self.instructions / self.pairs


def nvdisasm() -> str | None:
    """nvdisasm: on PATH, else the nvidia-cuda-nvdisasm wheel's, else under CUDA_HOME."""
    found = shutil.which("nvdisasm")
    if found:
        return found
    places = [os.path.join(p, "nvidia", "*", "bin", "nvdisasm") for p in sys.path if p]
    places += [os.path.join(os.environ[v], "bin", "nvdisasm") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    for pattern in places:
        for candidate in sorted(glob.glob(pattern)):
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def functions(sass: str) -> dict:
    """Each kernel's instructions and labels, in order, from nvdisasm's text:
    {name: [("label", name) | ("op", text)]}."""
    out, current = {}, None
    for line in sass.splitlines():
        m = _FUNCTION.match(line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        if current is None:
            continue
        m = _LABEL.match(line)
        if m:
            current.append(("label", m.group(1)))
            continue
        m = _INSTRUCTION.search(line)
        if m:
            current.append(("op", m.group(1)))
    return out


def inner_loops(body) -> list:
    """The innermost loops of one kernel that compute pairs (hold MUFU.RSQ)."""
    at, ops = {}, []
    for kind, value in body:
        if kind == "label":
            at[value] = len(ops)
        else:
            ops.append(value)
    spans = []
    for k, op in enumerate(ops):
        m = _BRANCH.search(op)
        if m and at.get(m.group(1), k + 1) <= k:
            spans.append((at[m.group(1)], k))
    loops = []
    for lo, hi in spans:
        if any((a, b) != (lo, hi) and lo <= a and b <= hi for a, b in spans):
            continue                 # holds another loop
        text = ops[lo:hi + 1]
        pairs = sum("MUFU.RSQ" in op for op in text)
        if pairs:
            loops.append(Loop(len(text), pairs, text))
    return loops


def pair_loop(sass: str, kernel: str) -> Loop:
    """The pair loop of ``kernel``: its innermost loop with the most MUFU.RSQ."""
    body = functions(sass).get(kernel)
    if body is None:
        raise ValueError(f"no kernel {kernel!r} in the disassembly")
    loops = inner_loops(body)
    if not loops:
        raise ValueError(f"no pair loop (a loop with MUFU.RSQ) in {kernel}")
    return max(loops, key=lambda loop: (loop.pairs, -loop.instructions))


def disassemble(cubin: bytes, tool: str) -> str:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="solver-sass-") as tmp:
        path = os.path.join(tmp, "nbody.cubin")
        with open(path, "wb") as fh:
            fh.write(cubin)
        done = subprocess.run([tool, "-c", path], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"nvdisasm failed: {done.stderr.strip()}")
    return done.stdout


def count(real="float", arch=ARCH) -> dict:
    """{kernel: Loop} for the cuda backend's n-body program in ``real``."""
    from ..backends import cuda
    from ..config import ConfigError
    tool = nvdisasm()
    if tool is None:
        raise ConfigError("bench sass: nvdisasm not found; pip install nvidia-cuda-nvdisasm "
                          "(pip install .[sass]) or put the CUDA toolkit's bin on PATH")
    if cuda.nvcc() is None:
        raise ConfigError("bench sass: nvcc not found; put the CUDA toolkit's bin on PATH or set CUDA_HOME")
    sass = disassemble(cuda.nbody_cubin(real, arch), tool)
    return {kernel: pair_loop(sass, kernel) for kernel in KERNELS}


def bench_sass(args, comm) -> int:
    """Print the instructions per pair of every n-body pair loop on sm_90;
    exit status 1 when the float force loop misses GOAL."""
    from ..backends import cuda
    if comm.rank != 0:
        return 0
    rows = {real: count(real) for real in ("float", "double")}
    print(f"SASS per pair interaction, {ARCH}, nvcc {' '.join(cuda.NBODY_OPTIONS)} "
          f"(the cuda backend's n-body program), nvdisasm from {nvdisasm()}")
    print(f"{'kernel':24s} {'real':7s} {'loop instr.':>11s} {'pairs':>6s} {'per pair':>9s}")
    for real, loops in rows.items():
        for kernel, loop in loops.items():
            print(f"{kernel:24s} {real:7s} {loop.instructions:11d} {loop.pairs:6d} {loop.per_pair:9.2f}")
    force = rows["float"]["nbody_accel_part"].per_pair
    verdict = "met" if force <= GOAL else "MISSED"
    print(f"float force loop: {force:.2f} instructions per pair (goal: at most {GOAL}): {verdict}")
    return 0 if force <= GOAL else 1
