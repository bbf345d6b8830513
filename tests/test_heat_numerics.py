"""Heat on one rank against analytic solutions and conservation laws."""
import itertools
import math

import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, heat_settings, make_heat, run_to_end
from solver.config import ConfigError
from solver.models.heat.model import HeatModel, split_boxes, stability_limit

pytestmark = pytest.mark.timeout(120)


def _error_at(n, ndim, ratio, t_end, modes):
    """L2 error against the analytic solution with dt = ratio * h^2."""
    h = 1.0 / n
    dt = ratio * h * h
    steps = round(t_end / dt)
    assert abs(steps * dt - t_end) < 1e-12
    model = make_heat(MPI.COMM_SELF, f"heat.shape={[n] * ndim}", f"heat.modes={modes}",
                      f"time.dt={dt!r}", f"time.steps={steps}")
    run_to_end(model)
    return model.diagnostics()["err_l2"]


@pytest.mark.parametrize("ndim, ratio, t_end, modes, sizes", [
    (2, 0.2, 0.05, [1, 2], [16, 32, 64]),
    (3, 0.1, 0.0125, [1, 1, 2], [16, 32, 64]),
])
def test_second_order_convergence(ndim, ratio, t_end, modes, sizes):
    errors = [_error_at(n, ndim, ratio, t_end, modes) for n in sizes]
    rates = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
    assert all(3.6 < r < 4.4 for r in rates), (errors, rates)


@pytest.mark.parametrize("boundary", ["dirichlet", "neumann", "periodic"])
def test_sine_start_tracks_analytic_solution(boundary):
    model = make_heat(MPI.COMM_SELF, "heat.shape=[64,48]", f"heat.boundary={boundary}",
                      "heat.extent=[1.0,0.75]", "heat.modes=[2,1]", "time.steps=200")
    first = model.diagnostics()
    assert first["err_max"] < 1e-14
    run_to_end(model)
    last = model.diagnostics()
    assert last["err_max"] < 2e-3 * (first["max"] - first["min"])


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("shape", [[33, 20], [12, 9, 7]])
def test_total_heat_is_conserved(boundary, shape):
    model = make_heat(MPI.COMM_SELF, f"heat.shape={shape}", f"heat.boundary={boundary}",
                      "heat.initial=random", "time.steps=300")
    before = model.diagnostics()["heat"]
    run_to_end(model)
    after = model.diagnostics()["heat"]
    assert abs(after - before) <= 1e-12 * abs(before)


def test_dirichlet_relaxes_to_the_wall_value():
    model = make_heat(MPI.COMM_SELF, "heat.shape=[12,10]", "heat.boundary_value=0.7",
                      "heat.initial=hotspot", "time.steps=3000")
    run_to_end(model)
    assert np.allclose(model.local_field(), 0.7, atol=1e-6)


def test_unstable_dt_is_refused():
    settings = heat_settings("heat.shape=[100,100]", "time.dt=1e-4")
    limit = stability_limit(settings.heat)
    assert limit == pytest.approx(1 / (2 * 2 * 100 ** 2))
    with pytest.raises(ConfigError, match="time.dt.*stability limit"):
        HeatModel(settings, MPI.COMM_SELF, None)


def test_auto_dt_is_the_safety_fraction_of_the_limit():
    model = make_heat(MPI.COMM_SELF, "heat.shape=[10,20,30]", "heat.extent=[1,2,3]", "heat.diffusivity=0.5")
    assert model.dt == pytest.approx(0.9 * stability_limit(model.heat), rel=1e-15)


def test_t_end_lands_exactly():
    model = make_heat(MPI.COMM_SELF, "heat.shape=[16,16]", "time.t_end=0.01")
    run_to_end(model)
    assert model.time == pytest.approx(0.01, rel=1e-12)
    assert model.dt <= stability_limit(model.heat)


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (2, 7), (5, 5), (9, 12), (3, 1, 4), (6, 5, 4), (8, 9, 7)])
def test_interior_and_border_cover_every_cell_once(shape, width):
    for inner in itertools.product([(False, False), (True, False), (True, True)], repeat=len(shape)):
        count = np.zeros([n + 2 * width for n in shape], int)
        interior, boxes = split_boxes(shape, width, inner)
        for lo, hi in boxes + ([interior] if interior else []):
            count[tuple(slice(l, h) for l, h in zip(lo, hi))] += 1
        owned = tuple(slice(width, width + n) for n in shape)
        assert (count[owned] == 1).all() and count.sum() == np.prod(shape)
        if interior:       # its cells are at least `width` from every side that faces a neighbour
            for a, (low, high) in enumerate(inner):
                assert interior[0][a] >= width + (width if low else 0)
                assert interior[1][a] <= width + shape[a] - (width if high else 0)
                if low != high:   # border boxes reach `width` cells inwards, never past the wall
                    assert interior[1][a] - interior[0][a] >= width


def test_random_start_is_seeded():
    a = make_heat(MPI.COMM_SELF, "heat.initial=random", "heat.seed=3").local_field()
    b = make_heat(MPI.COMM_SELF, "heat.initial=random", "heat.seed=3").local_field()
    c = make_heat(MPI.COMM_SELF, "heat.initial=random", "heat.seed=4").local_field()
    assert (a == b).all() and not (a == c).all()
    assert 0.45 < a.mean() < 0.55 and a.min() >= 0 and a.max() < 1


def test_one_rank_gather_is_the_local_field():
    model = make_heat(MPI.COMM_SELF, "heat.shape=[5,4]", "heat.initial=gaussian")
    assert (gather_field(model) == model.local_field()).all()
    assert math.isclose(model.local_field().max(), model.diagnostics()["max"])


def test_sweep_work_counts_the_grown_levels():
    from solver.models.heat.model import _sweep_work
    # a 10 x 10 box growing on one side of axis 0: levels cover 12, 11 and 10 rows
    assert _sweep_work([(((0, 0), (10, 10)), (False, True, False, False))], 3) == (12 + 11 + 10) * 10


@pytest.mark.parametrize("shape, steps, overlaps", [([1024, 1024], 2, True), ([64, 64, 64], 8, False)])
def test_overlap_only_where_its_recomputation_is_cheap(shape, steps, overlaps):
    """Deep halos on small 3-D blocks: boxes growing into each other would cost
    more than the overlap saves, so the block is swept whole after the halo."""
    model = make_heat(MPI.COMM_SELF, f"heat.shape={shape}", "heat.boundary=periodic", "heat.initial=random",
                      f"heat.fused_steps={steps}", backend="numpy")
    assert (model._interior is not None) == overlaps
    if not overlaps:
        assert len(model._border) == 1
