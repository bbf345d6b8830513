"""The heat halo exchange of the cuda backend on the simulated driver:
what one exchange asks of the device (counted per exchange and rank), and
the CUDA-aware path, bit for bit."""
import numpy as np
import pytest
from mpi4py import MPI

from cuda_sim.fixture import cuda_sim  # noqa: F401  (the fixture)
from cuda_sim.halo_counts import measure
from helpers import heat_settings, run_to_end

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("shape, width, messages", [([24, 20, 16], 2, 6), ([24, 20, 16], 1, 6), ([40, 36], 3, 4)])
def test_cuda_sim_one_exchange_is_two_launches_one_wait_one_copy_each_way(cuda_sim, shape, width, messages):  # noqa: F811
    """Faces only (6 messages in 3-D, the axes in turn for a deep halo),
    every region gathered by one kernel into one buffer and back; the host
    waits once, after the interior kernels are queued; no timed events."""
    worst, sent, ordered, exchanges = measure(MPI.COMM_SELF, shape, width, 4 * width)
    assert exchanges >= 2
    assert worst["launches"] <= 4 and worst["host_syncs"] <= 1, worst
    assert worst["dtoh"] <= 2 and worst["htod"] <= 2, worst
    assert worst["timed_events"] == 0, worst
    assert sent == messages
    assert ordered


def _gpu_aware_model(shape, boundary, fused, monkeypatch):
    from solver.backends import get_backend
    from solver.models.heat.model import HeatModel
    monkeypatch.setattr(MPI, "Query_cuda_support", lambda: True, raising=False)   # host memory underneath
    settings = heat_settings(f"heat.shape={shape}", "heat.initial=random", f"heat.boundary={boundary}",
                             "time.steps=9", f"heat.fused_steps={fused}")
    model = HeatModel(settings, MPI.COMM_SELF, get_backend("cuda", MPI.COMM_SELF, -1, True))
    model.set_initial()
    return model, settings


@pytest.mark.parametrize("shape", [[21, 17], [13, 11, 9]])
@pytest.mark.parametrize("fused", [1, 3])
def test_cuda_sim_gpu_aware_exchange_is_bitwise_equal_to_the_reference(cuda_sim, shape, fused, monkeypatch):  # noqa: F811
    """Messages straight from device memory (periodic: this rank is its
    own neighbour): the same bits as the reference, no copies to the host."""
    from helpers import make_heat
    model, _ = _gpu_aware_model(shape, "periodic", fused, monkeypatch)
    assert model.halo.plan.send.__class__.__name__ == "DeviceArray"
    cuda_sim.reset_counts()
    a = run_to_end(model).local_field()
    b = run_to_end(make_heat(MPI.COMM_SELF, f"heat.shape={shape}", "heat.initial=random", "heat.boundary=periodic",
                             "time.steps=9", f"heat.fused_steps={fused}")).local_field()
    assert np.array_equal(a, b)
