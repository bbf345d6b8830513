"""Every compiled backend against the NumPy reference."""
import numpy as np
import pytest
from mpi4py import MPI

from helpers import make_heat, make_nbody, run_to_end
from solver.backends import get_backend, numpy_ as ref, status

pytestmark = pytest.mark.timeout(300)
COMPILED = [name for name in ("cpu", "opencl") if status()[name][0]]


def test_auto_prefers_a_compiled_backend_when_there_is_one():
    assert get_backend("auto").name == (COMPILED[0] if COMPILED else "numpy")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("boundary", ["dirichlet", "neumann", "periodic"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11], [7, 83, 5]])
@pytest.mark.parametrize("fused", [0, 1, 5])
def test_heat_is_bitwise_equal_to_the_reference(backend, boundary, shape, fused):
    """Any number of steps per sweep (0: the backend's choice), 3-D tiles included."""
    args = (f"heat.shape={shape}", f"heat.boundary={boundary}", "heat.initial=random", "time.steps=30",
            "heat.boundary_value=0.3")
    model = make_heat(MPI.COMM_SELF, *args, f"heat.fused_steps={fused}", backend=backend)
    if fused:
        assert model.block == fused
    a = run_to_end(model).local_field()
    b = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="numpy")).local_field()
    assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("boundary", ["dirichlet", "neumann"])
@pytest.mark.parametrize("fused", [17, 24, 40])
def test_deep_sweeps_never_reach_past_a_wall(backend, boundary, fused):
    """More steps per sweep than a 3-D tile is rows wide: tiles widen to match."""
    args = ("heat.shape=[5,97,6]", f"heat.boundary={boundary}", "heat.initial=random", "time.steps=45",
            "heat.boundary_value=0.3")
    a = run_to_end(make_heat(MPI.COMM_SELF, *args, f"heat.fused_steps={fused}", backend=backend)).local_field()
    b = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="numpy")).local_field()
    assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", COMPILED)
def test_nbody_kernels_agree_with_the_reference(backend):
    mod = get_backend(backend)
    rng = np.random.default_rng(1)
    x, m = rng.normal(size=(700, 3)), rng.uniform(0.1, 1.0, 700)
    for j0, i0 in ((0, 0), (300, None)):
        a, b = np.zeros((700, 3)), np.zeros((700, 3))
        mod.nbody_accel(x, x, m, j0, 1e-4, 1.0, a, i0=i0)
        ref.nbody_accel(x, x, m, j0, 1e-4, 1.0, b, i0=i0)
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    pa = mod.nbody_potential(x, x, m, 0, 0, 1e-4, 1.0)
    pb = ref.nbody_potential(x, x, m, 0, 0, 1e-4, 1.0)
    assert np.allclose(pa, pb, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", COMPILED)
def test_nbody_trajectories_agree_with_the_reference(backend):
    a = make_nbody(MPI.COMM_SELF, "nbody.n=300", "time.dt=0.002", backend=backend)
    b = make_nbody(MPI.COMM_SELF, "nbody.n=300", "time.dt=0.002", backend="numpy")
    for _ in range(20):
        a.step()
        b.step()
    assert np.abs(a.x - b.x).max() <= 1e-12 * np.abs(b.x).max()


@pytest.mark.parametrize("backend", COMPILED)
def test_coincident_bodies_are_detected(backend):
    mod = get_backend(backend)
    x = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    assert mod.nbody_accel(x, x, np.ones(3), 0, 0.0, 1.0, np.zeros((3, 3)), i0=0) == 2
