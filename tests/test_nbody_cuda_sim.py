"""The cuda backend's n-body path on the simulated CUDA driver (tests/cuda_sim):
the n-body program (FMA, rsqrt, the branch-free pair loop), the source split
across groups with its parts added in order, and the host code around it
(kept buffers, asynchronous copies, one wait per call)."""
from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from cuda_sim.fixture import cuda_sim  # noqa: F401  (the fixture)
from helpers import make_nbody
from solver.backends import numpy_ as ref

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def cuda(cuda_sim):            # noqa: F811
    from solver.backends import cuda as mod
    assert mod.available()[0]
    yield mod


def _bodies(n, dtype=np.float64, seed=6):
    rng = np.random.default_rng(seed)
    x, v, m = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.uniform(0.1, 1.0, n)
    x[3] = x[300]                       # a pair at one point
    return x.astype(dtype), v.astype(dtype), m.astype(dtype)


def _launches(monkeypatch):
    """Record (kernel, grid) of every launch on the simulated driver."""
    import cuda_sim.driver as drv
    seen, call = [], drv.Function.__call__

    def spy(self, *args, **kw):
        seen.append((self.name, tuple(kw.get("grid", (1, 1)))))
        return call(self, *args, **kw)
    monkeypatch.setattr(drv.Function, "__call__", spy)
    return seen


@pytest.mark.parametrize("eps2", [1e-4, 0.0])
def test_cuda_sim_nbody_float64_agrees_with_the_reference(cuda, eps2):
    x, v, m = _bodies(700)
    for j0, i0 in ((0, 0), (300, 300), (300, None)):
        a, b = np.zeros_like(x), np.zeros_like(x)
        assert cuda.nbody_accel(x, x, m, j0, eps2, 1.0, a, i0=i0) == ref.nbody_accel(x, x, m, j0, eps2, 1.0, b,
                                                                                    i0=i0)
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    ids = np.arange(700) + 40
    acc, jerk, acc0, jerk0 = (np.zeros_like(x) for _ in range(4))
    bad = cuda.nbody_accel_jerk(x, v, ids, x, v, m, 40, eps2, 1.0, acc, jerk)
    assert bad == ref.nbody_accel_jerk(x, v, ids, x, v, m, 40, eps2, 1.0, acc0, jerk0) == (2 if eps2 == 0 else 0)
    for ours, theirs in ((acc, acc0), (jerk, jerk0)):
        assert np.allclose(ours, theirs, rtol=1e-12, atol=1e-12 * np.abs(theirs).max())
    phi = cuda.nbody_potential(x, x, m, 0, 0, eps2, 1.0)
    want = ref.nbody_potential(x, x, m, 0, 0, eps2, 1.0)
    finite = np.isfinite(want)
    assert np.allclose(phi[finite], want[finite], rtol=1e-12, atol=0)


def test_cuda_sim_nbody_float32_forces_agree_with_float64_within_1e_5(cuda):
    x, v, m = _bodies(1000)
    x32, v32, m32 = (a.astype(np.float32) for a in (x, v, m))
    a32, want = np.zeros_like(x32), np.zeros_like(x)
    assert cuda.nbody_accel(x32, x32, m32, 0, 1e-4, 1.0, a32, i0=0) == 0
    ref.nbody_accel(x, x, m, 0, 1e-4, 1.0, want, i0=0)
    assert np.abs(a32 - want).max() <= 1e-5 * np.abs(want).max()
    acc, jerk, acc0, jerk0 = np.zeros_like(x32), np.zeros_like(x32), np.zeros_like(x), np.zeros_like(x)
    cuda.nbody_accel_jerk(x32, v32, np.arange(1000), x32, v32, m32, 0, 1e-4, 1.0, acc, jerk)
    ref.nbody_accel_jerk(x, v, np.arange(1000), x, v, m, 0, 1e-4, 1.0, acc0, jerk0)
    assert np.abs(acc - acc0).max() <= 1e-5 * np.abs(acc0).max()
    assert np.abs(jerk - jerk0).max() <= 1e-5 * np.abs(jerk0).max()
    # without softening the pair at one point is counted (from both sides), the bodies themselves are not
    out = np.zeros_like(x32)
    assert cuda.nbody_accel(x32, x32, m32, 0, 0.0, 1.0, out, i0=0) == 2 and np.isfinite(out).all()
    assert cuda.nbody_accel_jerk(x32, v32, np.arange(1000), x32, v32, m32, 0, 0.0, 1.0, out, out.copy()) == 2


def test_cuda_sim_nbody_few_targets_split_the_sources_across_groups(cuda, monkeypatch):
    """20 targets against 3000 sources: one group of targets, the sources'
    12 tiles in 12 runs (132 simulated SMs), then one adding of the parts;
    the sums agree with the reference and count the pair at one point."""
    x, _, m = _bodies(3000)
    seen = _launches(monkeypatch)
    a, b = np.zeros((20, 3)), np.zeros((20, 3))
    bad = cuda.nbody_accel(x[290:310], x, m, 0, 0.0, 1.0, a, i0=290)
    assert bad == ref.nbody_accel(x[290:310], x, m, 0, 0.0, 1.0, b, i0=290) == 1
    assert seen == [("nbody_accel_part", (1, 12)), ("nbody_sum_parts", (1, 1))]
    assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_cuda_sim_nbody_split_sums_do_not_depend_on_how_targets_are_split(cuda, monkeypatch):
    """Halves of the targets (as on two ranks) and batches of one group give
    the very numbers of one call over all targets."""
    x, v, m = _bodies(1200)
    whole = np.zeros_like(x)
    cuda.nbody_accel(x, x, m, 0, 1e-4, 1.0, whole, i0=0)
    halves = np.zeros_like(x)
    cuda.nbody_accel(x[:500], x, m, 0, 1e-4, 1.0, halves[:500], i0=0)
    cuda.nbody_accel(x[500:], x, m, 0, 1e-4, 1.0, halves[500:], i0=500)
    monkeypatch.setattr(cuda, "NBODY_PART_BYTES", 1)
    seen = _launches(monkeypatch)
    batched = np.zeros_like(x)
    cuda.nbody_accel(x, x, m, 0, 1e-4, 1.0, batched, i0=0)
    assert [grid for _, grid in seen] == [(1, 5), (1, 1)] * 5
    assert np.array_equal(whole, halves) and np.array_equal(whole, batched)
    ids = np.arange(1200)
    sums = [(np.zeros_like(x), np.zeros_like(x)) for _ in range(2)]
    cuda.nbody_accel_jerk(x, v, ids, x, v, m, 0, 1e-4, 1.0, *sums[0])
    monkeypatch.setattr(cuda, "NBODY_PART_BYTES", 32 * 2 ** 20)
    cuda.nbody_accel_jerk(x, v, ids, x, v, m, 0, 1e-4, 1.0, *sums[1])
    assert all(np.array_equal(p, q) for p, q in zip(*sums))


def test_cuda_sim_nbody_a_force_call_allocates_nothing_and_waits_once(cuda, cuda_sim):   # noqa: F811
    """Once a first call has sized the buffers, a force call allocates no
    memory, copies in and out asynchronously and waits once, for its results."""
    x, v, m = _bodies(600)
    a = np.zeros_like(x)

    def force():
        cuda.nbody_accel(x, x, m, 0, 1e-4, 1.0, a, i0=0)

    def force_and_jerk():               # a block step's active bodies against all of them
        cuda.nbody_accel_jerk(x[:100], v[:100], np.arange(100), x, v, m, 0, 1e-4, 1.0, a[:100], a[:100].copy())
    for call, copies_in in ((force, 2), (force_and_jerk, 6)):
        call()
        cuda_sim.reset_counts()
        call()
        counts = dict(cuda_sim.counts)
        assert counts["allocations"] == 0 and counts["host_syncs"] == 1, counts
        assert counts["htod"] == copies_in and counts["dtoh"] == 2, counts   # a call over all: positions once


@pytest.mark.parametrize("overrides", [(), ("nbody.precision=float32",), ("nbody.integrator=hermite",)])
def test_cuda_sim_nbody_trajectories_follow_the_reference(cuda, overrides):
    args = ("nbody.n=300", "time.dt=0.002", *overrides)
    a = make_nbody(MPI.COMM_SELF, *args, backend="cuda")
    b = make_nbody(MPI.COMM_SELF, *args, backend="numpy")
    for _ in range(5):
        a.step()
        b.step()
    tolerance = 1e-5 if "nbody.precision=float32" in overrides else 1e-12
    assert np.abs(a.x - b.x).max() <= tolerance * np.abs(b.x).max()
    da, db = a.diagnostics(), b.diagnostics()
    assert da["energy"] == pytest.approx(db["energy"], rel=tolerance)
