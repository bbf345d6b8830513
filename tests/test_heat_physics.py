"""Heat with the user's own physics, against what does not depend on us:
a manufactured solution (variable D, a source, Dirichlet, Neumann and Robin
faces) converging at second order, the heat balance of sources and wall
fluxes, a layered slab's exact profile; and the config's rules for faces."""
import math

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from helpers import heat_settings, make_heat, run_to_end
from solver.backends import status
from solver.config import ConfigError

pytestmark = pytest.mark.timeout(600)
FAST = "cpu" if status()["cpu"][0] else "numpy"       # bitwise the reference's answer (test_backends)


# --- a manufactured steady solution -------------------------------------------
# u = A + C x0 + B f0(x0) f1(x1) [f2(x2)],  D = 1 + E g0(x0) g1(x1) [g2(x2)]  on the unit square (cube)
# faces: x0 = 0 Dirichlet (u = A), x0 = 1 Robin (f0 = f0' = 0 and g0 = 0 there: u = A + C, D = 1,
# -D du/dn = -C = h (u - u_amb)), x1 = 0, 1 insulated Neumann (f1' = 0), x2 periodic.
# Q = -div(D grad u), time-independent: the run goes to the steady state from
# the exact field, so the error left is the discretisation's.
A, C, B, E, H = 1.0, 0.5, 4.0, 0.5, 2.0
U_AMBIENT = A + C + C / H
F = [(lambda x: x * (1 - x) ** 2, lambda x: (1 - x) * (1 - 3 * x), lambda x: -4 + 6 * x),
     (lambda x: np.cos(np.pi * x), lambda x: -np.pi * np.sin(np.pi * x), lambda x: -np.pi ** 2 * np.cos(np.pi * x)),
     (lambda x: 1 + 0.5 * np.sin(2 * np.pi * x), lambda x: np.pi * np.cos(2 * np.pi * x),
      lambda x: -2 * np.pi ** 2 * np.sin(2 * np.pi * x))]
G = [(lambda x: np.sin(np.pi * x), lambda x: np.pi * np.cos(np.pi * x)),
     (lambda x: np.cos(np.pi * x), lambda x: -np.pi * np.sin(np.pi * x)),
     (lambda x: np.cos(2 * np.pi * x), lambda x: -2 * np.pi * np.sin(2 * np.pi * x))]


def _grid(n, ndim):
    x = (np.arange(n) + 0.5) / n
    return np.meshgrid(*[x] * ndim, indexing="ij")


def _product(parts, skip=None, order=0):
    out = 1.0
    for d, p in enumerate(parts):
        out = out * (p[order] if d == skip else p[0])
    return out


def manufactured(n, ndim):
    """(u, D, Q) at the cell centres of an n^ndim grid."""
    X = _grid(n, ndim)
    f = [[fn(x) for fn in F[d]] for d, x in enumerate(X)]
    g = [[fn(x) for fn in G[d]] for d, x in enumerate(X)]
    u = A + C * X[0] + B * _product(f)
    D = 1 + E * _product(g)
    Q = np.zeros_like(u)
    for d in range(ndim):
        du = B * _product(f, d, 1) + (C if d == 0 else 0.0)
        Q -= E * _product(g, d, 1) * du + D * B * _product(f, d, 2)
    return u, D, Q


def _mms_faces(ndim):
    kinds = [["dirichlet", "robin"], ["neumann", "neumann"], ["periodic", "periodic"]][:ndim]
    values = [[A, U_AMBIENT], [0, 0], [0, 0]][:ndim]
    transfer = [[0, H], [0, 0], [0, 0]][:ndim]
    return [f"heat.boundary={kinds}", f"heat.boundary_value={values}", f"heat.boundary_transfer={transfer}"]


def _mms_error(tmp_path, n, ndim, t_end):
    u, D, Q = manufactured(n, ndim)
    for name, a in (("u", u), ("D", D), ("Q", Q)):
        np.save(tmp_path / f"{name}{n}.npy", a)
    model = make_heat(MPI.COMM_SELF, f"heat.shape={[n] * ndim}", *_mms_faces(ndim), "heat.initial=file",
                      f"heat.file='{tmp_path / f'u{n}.npy'}'", f"heat.diffusivity='{tmp_path / f'D{n}.npy'}'",
                      f"heat.source='{tmp_path / f'Q{n}.npy'}'", f"time.t_end={t_end}", backend=FAST)
    run_to_end(model)
    steady = model.local_field()
    model.advance(model.block)                        # one sweep more: the field no longer moves
    drift = np.abs(model.local_field() - steady).max()
    return math.sqrt(np.mean((steady - u) ** 2)), drift


@pytest.mark.parametrize("ndim, sizes, t_end", [(2, [16, 32, 64], 3.0), (3, [12, 24, 48], 2.5)])
def test_manufactured_solution_converges_at_second_order(tmp_path, ndim, sizes, t_end):
    """Variable D, a source, Dirichlet, Robin and Neumann faces (and a periodic
    axis in 3-D), dt = 0.9 x the stability limit (proportional to h^2): the
    error falls by 4 each time h halves."""
    results = [_mms_error(tmp_path, n, ndim, t_end) for n in sizes]
    errors = [e for e, _ in results]
    ratios = [errors[k] / errors[k + 1] for k in range(len(errors) - 1)]
    assert all(3.5 < r < 4.5 for r in ratios), (errors, ratios)
    assert all(drift < 1e-3 * e for e, drift in results), results       # it is the steady state


# --- the heat balance -----------------------------------------------------------
def _conservation_case(tmp_path, shape, kinds, values, transfer):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "D.npy", rng.uniform(0.2, 3.0, shape))
    np.save(tmp_path / "Q.npy", rng.uniform(-2.0, 5.0, shape))
    return (f"heat.shape={shape}", f"heat.boundary={kinds}", f"heat.boundary_value={values}",
            f"heat.boundary_transfer={transfer}", f"heat.diffusivity='{tmp_path / 'D.npy'}'",
            f"heat.source='{tmp_path / 'Q.npy'}'", "heat.initial=random", "time.steps=400")


@pytest.mark.parametrize("shape", [[33, 20], [12, 9, 7]])
@pytest.mark.parametrize("backend", ["numpy", FAST])
def test_total_heat_changes_by_the_sources_and_wall_fluxes(tmp_path, shape, backend):
    """Neumann fluxes, Robin faces, a source and variable D: the change of
    total heat equals what the run reports as added (heat_in), to round-off,
    at every diagnostics step."""
    kinds = [["neumann", "robin"], ["robin", "neumann"], ["neumann", "neumann"]][:len(shape)]
    values = [[0.7, 0.2], [-1.5, -0.3], [0.4, 0.25]][:len(shape)]
    transfer = [[0, 3.0], [0.5, 0], [0, 0]][:len(shape)]
    model = make_heat(MPI.COMM_SELF, *_conservation_case(tmp_path, shape, kinds, values, transfer), backend=backend)
    start = model.diagnostics()
    assert start["heat_in"] == 0 and start["balance"] == 0
    for _ in range(4):
        target = model.step_count + 100
        while model.step_count < target:
            model.advance(target - model.step_count)
        d = model.diagnostics()
        change = d["heat"] - start["heat"]
        assert abs(change) > 1e-3
        assert abs(change - d["heat_in"]) <= 1e-12 * (abs(start["heat"]) + abs(d["heat_in"])), d
        assert d["balance"] == pytest.approx(change - d["heat_in"], abs=1e-15)


def test_heat_in_of_fluxes_and_sources_is_their_integral(tmp_path):
    """Insulated-but-for-a-flux walls and a source: the heat added is
    t (integral of Q + flux x face area), whatever the field does."""
    shape, extent = [20, 30], [2.0, 1.5]
    kinds, values = [["neumann", "neumann"], ["neumann", "neumann"]], [[0.5, -0.25], [1.0, 0.0]]
    Q = np.random.default_rng(1).uniform(0, 1, shape)
    np.save(tmp_path / "Q.npy", Q)
    model = make_heat(MPI.COMM_SELF, f"heat.shape={shape}", f"heat.extent={extent}", f"heat.boundary={kinds}",
                      f"heat.boundary_value={values}", f"heat.source='{tmp_path / 'Q.npy'}'",
                      "heat.initial=random", "heat.diffusivity=0.3", "time.steps=250", backend=FAST)
    run_to_end(model)
    volume = (extent[0] / shape[0]) * (extent[1] / shape[1])
    expected = model.time * (Q.sum() * volume + (0.5 - 0.25) * extent[1] + 1.0 * extent[0])
    d = model.diagnostics()
    assert d["heat_in"] == pytest.approx(expected, rel=1e-12)
    assert abs(d["balance"]) <= 1e-12 * abs(d["heat"])


@pytest.mark.parametrize("walls", [("dirichlet", 0.3, 0.0), ("robin", -0.4, 5.0), ("neumann", 0.6, 0.0)])
def test_balance_holds_with_constant_coefficients(walls):
    """The constant-coefficient scheme (one number D, no source) reports the
    same balance through its ghost rules."""
    kind, value, h = walls
    model = make_heat(MPI.COMM_SELF, "heat.shape=[24,17,9]", f"heat.boundary={kind}", f"heat.boundary_value={value}",
                      *((f"heat.boundary_transfer={h}",) if h else ()), "heat.initial=random", "time.steps=300",
                      backend=FAST)
    assert model.coeffs is not None
    start = model.diagnostics()["heat"]
    run_to_end(model)
    d = model.diagnostics()
    assert abs(d["heat"] - start) > 1e-3
    assert abs(d["balance"]) <= 1e-12 * (abs(start) + abs(d["heat_in"]))


# --- a layered slab ----------------------------------------------------------------
@pytest.mark.parametrize("start", ["exact", "random"])
def test_two_layer_slab_reaches_the_exact_piecewise_linear_profile(tmp_path, start):
    """Two materials (D 1.0 and 0.1, the interface on a cell face) between
    walls held at 1 and 0: the steady profile is linear in each layer with
    the same flux through both, u = 1 - F x / D1, then 0 + F (L - x) / D2,
    F = 1 / (a / D1 + (L - a) / D2).  Harmonic-mean fluxes hold it exactly:
    from the exact profile nothing moves; from a random start the run gets
    there.  D comes from an HDF5 dataset, the start from a .npy file."""
    n, a, D1, D2 = 40, 0.3, 1.0, 0.1
    x = (np.arange(n) + 0.5) / n
    flux = 1.0 / (a / D1 + (1 - a) / D2)
    exact = np.where(x < a, 1 - flux * x / D1, flux * (1 - x) / D2)
    shape = [n, 3]
    with h5py.File(tmp_path / "materials.h5", "w") as f:
        f["layers/D"] = np.repeat(np.where(x < a, D1, D2)[:, None], 3, axis=1)
        f["other"] = np.zeros(7)
    field = np.repeat(exact[:, None], 3, axis=1)
    if start == "random":
        field = np.random.default_rng(3).uniform(0, 1, shape)
    np.save(tmp_path / "start.npy", field)
    walls = "[['dirichlet', 'dirichlet'], ['neumann', 'neumann']]"
    model = make_heat(MPI.COMM_SELF, f"heat.shape={shape}", f"heat.boundary={walls}",
                      "heat.boundary_value=[[1.0, 0.0], [0, 0]]", "heat.extent=[1.0, 0.075]",
                      f"heat.diffusivity='{tmp_path / 'materials.h5'}:layers/D'", "heat.initial=file",
                      f"heat.file='{tmp_path / 'start.npy'}'",
                      f"time.t_end={0.05 if start == 'exact' else 25.0}", backend=FAST)
    run_to_end(model)
    error = np.abs(model.local_field() - exact[:, None]).max()
    assert error < (1e-13 if start == "exact" else 1e-9), error


# --- the config's rules for faces and fields ------------------------------------------
@pytest.mark.parametrize("overrides, fragment", [
    (["heat.boundary_transfer=2.0"], "heat.boundary_transfer: 2 is set, but no face is robin"),
    (["heat.boundary=robin"], "heat.boundary_transfer: a robin face needs"),
    (["heat.boundary=[['robin','dirichlet'],['neumann','neumann']]", "heat.boundary_transfer=[[0,0],[0,0]]"],
     "the low face of axis 0 is robin and needs a transfer coefficient h > 0"),
    (["heat.boundary=[['robin','dirichlet'],['neumann','neumann']]", "heat.boundary_transfer=[[1,1],[0,0]]"],
     "the high face of axis 0 is dirichlet, not robin"),
    (["heat.boundary=periodic", "heat.boundary_value=0.5"], "every face is periodic and takes no value"),
    (["heat.boundary=[['periodic','periodic'],['dirichlet','neumann']]", "heat.boundary_value=[[1,0],[0,0]]"],
     "the low face of axis 0 is periodic and takes no value (write 0)"),
    (["heat.boundary=[['periodic','dirichlet'],['neumann','neumann']]"], "periodic applies to both faces"),
    (["heat.boundary=[['dirichlet','neumann']]"], "[low, high] pairs"),
    (["heat.boundary=[['dirichlet','neuman'],['neumann','neumann']]"], "did you mean 'neumann'"),
    (["heat.boundary_value=[[1,2,3],[0,0]]"], "heat.boundary_value: expected a number or a list of 2"),
    (["heat.diffusivity='fast'"], "heat.diffusivity: expected a number or a cell field"),
    (["heat.source=true"], "heat.source: expected a number"),
    (["heat.file='start.npy'"], "heat.file: 'start.npy' is set, but heat.initial is 'sine'"),
])
def test_faces_and_fields_that_would_be_ignored_or_are_malformed_are_refused(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        heat_settings(*overrides)
    assert fragment in str(info.value)


def test_pairs_give_every_face_its_own_condition():
    s = heat_settings("heat.boundary=[['periodic','periodic'],['dirichlet','robin']]",
                      "heat.boundary_value=[[0,0],[1.5,-2]]", "heat.boundary_transfer=[[0,0],[0,7]]").heat
    assert s.faces == (("periodic", "periodic"), ("dirichlet", "robin"))
    assert s.face_values == ((0, 0), (1.5, -2)) and s.face_transfer == ((0, 0), (0, 7))
    assert s.periods == (True, False)
    one = heat_settings("heat.boundary=[['periodic','periodic'],['dirichlet','dirichlet']]",
                        "heat.boundary_value=0.25").heat
    assert one.face_values == ((0.0, 0.0), (0.25, 0.25))          # one number: every face but the periodic ones


def test_variable_d_sets_the_step_limit_by_its_largest_value(tmp_path):
    from solver.models.heat.model import stability_limit
    D = np.full((10, 12), 0.5)
    D[3, 7] = 4.0
    np.save(tmp_path / "D.npy", D)
    model = make_heat(MPI.COMM_SELF, "heat.shape=[10,12]", f"heat.diffusivity='{tmp_path / 'D.npy'}'")
    assert model.dt == pytest.approx(0.9 * stability_limit(model.heat, 4.0), rel=1e-15)
    with pytest.raises(ConfigError, match="stability limit"):
        make_heat(MPI.COMM_SELF, "heat.shape=[10,12]", f"heat.diffusivity='{tmp_path / 'D.npy'}'",
                  f"time.dt={1.01 * stability_limit(model.heat, 4.0)!r}")


def test_the_sine_start_reports_its_error_only_where_it_is_exact():
    exact = make_heat(MPI.COMM_SELF, "heat.boundary=[['dirichlet','dirichlet'],['neumann','neumann']]")
    assert "err_l2" in exact.diagnostics()
    robin = make_heat(MPI.COMM_SELF, "heat.boundary=robin", "heat.boundary_transfer=1.0")
    assert "err_l2" not in robin.diagnostics()
