"""The CUDA n-body kernels at the GPU's peak, checked without a GPU: their
pair loop's cost in sm_90 machine code (nvcc + nvdisasm), and the numerics
of the source split (runs of tiles across groups, parts added in order) and
of the branch-free pair loop, on OpenCL (PoCL) through the same source."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from solver import kernels
from solver.backends import cuda, status
from solver.backends import numpy_ as ref
from solver.bench import sass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TILE = kernels.CONSTANTS["TILE"]

pytestmark = pytest.mark.timeout(600)
needs_tools = pytest.mark.skipif(cuda.nvcc() is None or sass.nvdisasm() is None,
                                 reason="needs nvcc and nvdisasm (pip install .[sass])")
needs_opencl = pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")


# --- the pair loop in SASS -----------------------------------------------------
SASS = """
\t.text.k:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   LDS.128 R4, [UR4] ;
        /*0020*/                   MUFU.RSQ R5, R5 ;
        /*0030*/                   FFMA R6, R5, R5, R6 ;
        /*0040*/                   MUFU.RSQ R7, R7 ;
        /*0050*/               @P0 BRA `(.L_x_1) ;
.L_x_2:
        /*0060*/                   MUFU.RSQ R5, R5 ;
.L_x_3:
        /*0070*/                   FADD R5, R5, R5 ;
        /*0080*/               @P1 BRA `(.L_x_3) ;
        /*0090*/               @P2 BRA `(.L_x_2) ;
        /*00a0*/                   EXIT ;
"""


def test_the_pair_loop_is_the_innermost_loop_with_the_most_rsqrt():
    loop = sass.pair_loop(SASS, "k")
    assert (loop.instructions, loop.pairs, loop.per_pair) == (5, 2, 2.5)
    assert len(sass.inner_loops(sass.functions(SASS)["k"])) == 1     # .L_x_2 holds .L_x_3; .L_x_3 has no pair


def test_a_kernel_without_a_pair_loop_is_named():
    with pytest.raises(ValueError, match="no kernel 'other'"):
        sass.pair_loop(SASS, "other")
    with pytest.raises(ValueError, match="no pair loop"):
        sass.pair_loop("\t.text.k:\n        /*0000*/ EXIT ;\n", "k")


def test_without_nvdisasm_bench_sass_says_how_to_get_it(monkeypatch):
    from solver.config import ConfigError
    monkeypatch.setattr(sass, "nvdisasm", lambda: None)
    with pytest.raises(ConfigError, match=r"nvdisasm not found; pip install nvidia-cuda-nvdisasm"):
        sass.count("float")


@needs_tools
@pytest.mark.parametrize("arch", cuda.ARCHS)
@pytest.mark.parametrize("real", ["float", "double"])
def test_nvcc_compiles_the_nbody_program_without_warnings(real, arch):
    assert cuda.nbody_cubin(real, arch)[:4] == b"\x7fELF"


@needs_tools
def test_the_float_force_loop_takes_at_most_16_instructions_per_pair_on_sm_90():
    loops = sass.count("float")
    assert loops["nbody_accel_part"].per_pair <= sass.GOAL, loops["nbody_accel_part"].text
    text = loops["nbody_accel_part"].text
    assert not any(".EX" in op for op in text)              # no 64-bit compare (its high half is ISETP...EX)
    assert not any("CALL" in op or "MUFU.RCP" in op for op in text)   # no IEEE sqrt or division slow path
    assert loops["nbody_accel_part"].pairs >= 4             # unrolled


@needs_tools
def test_bench_sass_prints_the_count():
    path = os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "solver", "bench", "sass"], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    assert out.returncode == 0, out.stderr
    line = [s for s in out.stdout.splitlines() if s.startswith("float force loop:")]
    assert line and line[0].endswith(": met"), out.stdout
    assert float(line[0].split()[3]) <= 16


# --- the source split ------------------------------------------------------------
def test_the_runs_depend_on_the_sources_only_and_cover_them():
    for nj, j0 in ((1, 0), (700, 300), (100_000, 0), (5000, 12345)):
        tiles = -(-(j0 % TILE + nj) // TILE)
        plans = {cuda.nbody_plan(ni, nj, j0, 3, 4, 132)[:2] for ni in (1, 100, 257, 10_000, 1_000_000)}
        assert len(plans) == 1
        span, parts = plans.pop()
        assert (parts - 1) * span < tiles <= parts * span and parts <= 4 * 132


def test_a_few_targets_fill_the_device():
    span, parts, batch = cuda.nbody_plan(256, 1_000_000, 0, 3, 4, 132)
    assert parts >= 3 * 132 and batch == 256       # one group of targets: 3 to 4 groups per SM
    span, parts, batch = cuda.nbody_plan(1_000_000, 1_000_000, 0, 6, 8, 132)
    assert parts * batch * (6 * 8 + 4) <= cuda.NBODY_PART_BYTES and batch % TILE == 0 and batch >= TILE


def _split(kind, real, xi, xj, mj, j0, eps2, G, sms, i0=None, vi=None, vj=None, ids=None):
    """Run the *_part and nbody_sum_parts kernels as backends/cuda.py does,
    on OpenCL: (sums (ni x width), pairs at one point)."""
    import pyopencl as cl

    from solver.backends import opencl
    prg, queue = opencl._program(real)
    ctx, mf = opencl._state["context"], cl.mem_flags
    dtype = np.float32 if real == "float" else np.float64
    width, size = (3 if kind == "accel" else 6), np.dtype(dtype).itemsize
    ni, nj = len(xi), len(xj)
    span, parts, batch = cuda.nbody_plan(ni, nj, j0, width, size, sms)

    def put(a, t=dtype):
        return cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(a, t))

    def scratch(nbytes):
        return cl.Buffer(ctx, mf.READ_WRITE, max(4, nbytes))
    out, bad = scratch(ni * width * size), scratch(4 * ni)
    part, bads = (out, bad) if parts == 1 else (scratch(parts * batch * width * size), scratch(4 * parts * batch))
    if kind == "accel":
        head = (put(xi), np.int64(ni), put(xj), put(mj), np.int64(nj), np.int64(j0),
                np.int64(-(2 ** 62) if i0 is None else i0), dtype(eps2), dtype(G))
    else:
        head = (put(xi), put(vi), put(ids, np.int64), np.int64(ni), put(xj), put(vj), put(mj), np.int64(nj),
                np.int64(j0), dtype(eps2), dtype(G))
    kernel = prg.nbody_accel_part if kind == "accel" else prg.nbody_accel_jerk_part
    for first in range(0, ni, batch):
        count = min(batch, ni - first)
        groups = -(-count // TILE) * TILE
        kernel(queue, (groups, parts), (TILE, 1), *head, np.int64(first), np.int64(count), np.int64(span),
               part, bads)
        if parts > 1:
            prg.nbody_sum_parts(queue, (groups,), (TILE,), part, bads, np.int64(parts), np.int64(first),
                                np.int64(count), np.int64(width), out, bad)
    sums, pairs = np.empty((ni, width), dtype), np.empty(ni, np.int32)
    cl.enqueue_copy(queue, sums, out)
    cl.enqueue_copy(queue, pairs, bad)
    return sums, int(pairs.sum())


def _bodies(n, dtype=np.float64, seed=4):
    rng = np.random.default_rng(seed)
    x, v, m = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.uniform(0.1, 1.0, n)
    x[7] = x[500]                       # a pair at one point (counted twice: once from each side)
    return x.astype(dtype), v.astype(dtype), m.astype(dtype)


@needs_opencl
@pytest.mark.parametrize("sms", [1, 100])
@pytest.mark.parametrize("eps2", [1e-4, 0.0])
def test_split_forces_agree_with_the_reference_and_count_pairs_at_one_point(sms, eps2):
    x, _, m = _bodies(1100)
    for j0, i0 in ((0, 0), (300, 300), (300, None)):
        got, pairs = _split("accel", "double", x, x, m, j0, eps2, 1.0, sms, i0=i0)
        want = np.zeros_like(x)
        bad = ref.nbody_accel(x, x, m, j0, eps2, 1.0, want, i0=i0)
        finite = np.isfinite(want).all(axis=1)
        assert pairs == bad, (j0, i0)
        assert np.allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12 * np.abs(want[finite]).max())


@needs_opencl
@pytest.mark.parametrize("eps2", [1e-4, 0.0])
def test_split_force_and_jerk_agree_with_the_reference(eps2):
    x, v, m = _bodies(900)
    ids = np.arange(900) + 40
    got, pairs = _split("jerk", "double", x, x, m, 40, eps2, 1.0, 100, vi=v, vj=v, ids=ids)
    acc, jerk = np.zeros_like(x), np.zeros_like(x)
    bad = ref.nbody_accel_jerk(x, v, ids, x, v, m, 40, eps2, 1.0, acc, jerk)
    assert pairs == bad == (2 if eps2 == 0 else 0)
    for ours, theirs in ((got[:, :3], acc), (got[:, 3:], jerk)):
        assert np.allclose(ours, theirs, rtol=1e-12, atol=1e-12 * np.abs(theirs).max())


@needs_opencl
def test_split_sums_do_not_depend_on_how_targets_are_split(monkeypatch):
    """The runs follow the sources only, and targets in batches sum alike:
    halves of the targets (as on two ranks), and batches of one group,
    give the very numbers of one call over all of them."""
    x, _, m = _bodies(1500)
    whole, _ = _split("accel", "double", x, x, m, 0, 1e-4, 1.0, 2, i0=0)
    low, _ = _split("accel", "double", x[:700], x, m, 0, 1e-4, 1.0, 2, i0=0)
    high, _ = _split("accel", "double", x[700:], x, m, 0, 1e-4, 1.0, 2, i0=700)
    monkeypatch.setattr(cuda, "NBODY_PART_BYTES", 1)
    batched, _ = _split("accel", "double", x, x, m, 0, 1e-4, 1.0, 2, i0=0)
    assert cuda.nbody_plan(1500, 1500, 0, 3, 8, 2)[1:] == (6, TILE)
    assert np.array_equal(whole, np.concatenate([low, high])) and np.array_equal(whole, batched)


@needs_opencl
def test_split_float32_forces_agree_with_float64_within_1e_5():
    x, _, m = _bodies(2000)
    got, _ = _split("accel", "float", x.astype(np.float32), x.astype(np.float32), m.astype(np.float32), 0, 1e-4,
                    1.0, 100, i0=0)
    want = np.zeros_like(x)
    ref.nbody_accel(x, x, m, 0, 1e-4, 1.0, want, i0=0)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
