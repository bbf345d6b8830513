"""Implicit heat schemes through PETSc: the matrix is the explicit scheme's
operator, the schemes have their order in time, a manufactured solution
converges, and options reach PETSc.  Skipped where petsc4py is missing
(tests/test_implicit_cli.py checks what such a run says)."""
import math

import numpy as np
import pytest
from mpi4py import MPI

from helpers import make_heat, run_to_end

pytest.importorskip("petsc4py")

from solver.models.heat.implicit import ImplicitStepper  # noqa: E402

pytestmark = pytest.mark.timeout(300)

FACES = {
    "dirichlet": ("heat.boundary='dirichlet'", "heat.boundary_value=0.7"),
    "neumann": ("heat.boundary='neumann'", "heat.boundary_value=0.3"),
    "robin": ("heat.boundary='robin'", "heat.boundary_value=0.2", "heat.boundary_transfer=3.0"),
    "periodic": ("heat.boundary='periodic'",),
    "mixed": ("heat.boundary=[['dirichlet', 'robin'], ['periodic', 'periodic'], ['neumann', 'robin']]",
              "heat.boundary_value=[[0.8, -0.3], [0, 0], [0.5, 1.0]]",
              "heat.boundary_transfer=[[0, 2.0], [0, 0], [0, 0.7]]"),
}


def _mixed(ndim, faces):
    """The mixed faces cut to ``ndim`` axes."""
    if faces != "mixed":
        return FACES[faces]
    kinds = [["dirichlet", "robin"], ["periodic", "periodic"], ["neumann", "robin"]][:ndim]
    values = [[0.8, -0.3], [0, 0], [0.5, 1.0]][:ndim]
    transfer = [[0, 2.0], [0, 0], [0, 0.7]][:ndim]
    return (f"heat.boundary={kinds}", f"heat.boundary_value={values}", f"heat.boundary_transfer={transfer}")


@pytest.mark.parametrize("fields", [False, True], ids=["constant", "fields"])
@pytest.mark.parametrize("faces", list(FACES))
@pytest.mark.parametrize("shape", [[24, 20], [10, 12, 9]], ids=["2d", "3d"])
def test_one_explicit_step_of_the_petsc_operator_is_the_explicit_step(tmp_path, shape, faces, fields):
    """u + dt (A u + f) with PETSc's matrix equals the explicit stencil's
    step to round-off, for every face kind, D and Q numbers or fields."""
    extra = []
    if fields:
        rng = np.random.default_rng(3)
        np.save(tmp_path / "D.npy", rng.uniform(0.3, 2.5, shape))
        np.save(tmp_path / "Q.npy", rng.uniform(-1.0, 3.0, shape))
        extra = [f"heat.diffusivity='{tmp_path}/D.npy'", f"heat.source='{tmp_path}/Q.npy'"]
    model = make_heat(MPI.COMM_SELF, f"heat.shape={shape}", "heat.initial='random'", "time.steps=1",
                      *_mixed(len(shape), faces), *extra)
    u0 = model.local_field()
    model.advance(1)
    explicit = model.local_field()
    D, Q = model._read_fields()
    stepper = ImplicitStepper(model.heat, model.decomp, "backward_euler", D, Q)
    try:
        stepper.load(u0)
        y = stepper.x.duplicate()
        stepper.A.mult(stepper.x, y)
        y.axpy(1.0, stepper.f)
        via_petsc = u0 + model.dt * y.array.reshape(u0.shape)
        y.destroy()
    finally:
        stepper.destroy()
        model.close()
    scale = max(1.0, float(np.max(np.abs(explicit))))
    np.testing.assert_allclose(via_petsc, explicit, rtol=0, atol=1e-13 * scale)
    assert not np.array_equal(u0, explicit)


def _sine_error(scheme, dt, *extra):
    """Relative L2 error at t = 0.1 of a 1-D sine mode (1024 cells, Dirichlet;
    a thin insulated second axis), where the spatial error (~1e-6) cannot
    mask the error in time."""
    model = make_heat(MPI.COMM_SELF, "heat.shape=[1024, 4]", "heat.boundary=[['dirichlet', 'dirichlet'], "
                      "['neumann', 'neumann']]", "heat.modes=[1, 0]", f"time.scheme='{scheme}'", f"time.dt={dt}",
                      "time.t_end=0.1", *extra)
    try:
        run_to_end(model)
        d = model.diagnostics()
        assert d["time"] == pytest.approx(0.1, rel=1e-12)
        amplitude = math.exp(-math.pi ** 2 * 0.1) / math.sqrt(2.0)       # the exact solution's RMS
        return d["err_l2"] / amplitude
    finally:
        model.close()


@pytest.mark.parametrize("scheme, low, high", [("backward_euler", 1.8, 2.2), ("crank_nicolson", 3.5, 4.5),
                                               ("bdf2", 3.5, 4.5)])
def test_order_in_time_against_the_analytic_sine_mode(scheme, low, high):
    coarse, fine = _sine_error(scheme, 0.01), _sine_error(scheme, 0.005)
    assert low <= coarse / fine <= high, (coarse, fine)


def _manufactured(n):
    """A steady solution u = sin(pi x) cos(pi y) with D = 1 + x y / 2 and the
    source that holds it, Dirichlet walls on axis 0 and insulated ones on
    axis 1, reached by backward Euler with a huge step: (max error, model)."""
    x = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    D = 1.0 + 0.5 * X * Y
    pi = math.pi
    Q = (-0.5 * pi * Y * np.cos(pi * X) * np.cos(pi * Y) + 0.5 * pi * X * np.sin(pi * X) * np.sin(pi * Y)
         + 2 * pi ** 2 * D * np.sin(pi * X) * np.cos(pi * Y))
    return D, Q, np.sin(pi * X) * np.cos(pi * Y)


@pytest.mark.parametrize("scheme", ["backward_euler", "bdf2"])
def test_manufactured_solution_with_variable_d_source_and_mixed_faces_converges(tmp_path, scheme):
    """Second order in space, as the explicit scheme (the same operator)."""
    errors = []
    for n in (32, 64):
        D, Q, exact = _manufactured(n)
        np.save(tmp_path / f"D{n}.npy", D)
        np.save(tmp_path / f"Q{n}.npy", Q)
        model = make_heat(MPI.COMM_SELF, f"heat.shape=[{n}, {n}]", f"heat.diffusivity='{tmp_path}/D{n}.npy'",
                          f"heat.source='{tmp_path}/Q{n}.npy'", "heat.initial='random'",
                          "heat.boundary=[['dirichlet', 'dirichlet'], ['neumann', 'neumann']]",
                          f"time.scheme='{scheme}'", "time.dt=1000.0", "time.steps=3",
                          "solver.petsc_options='-ksp_rtol 1e-12'")
        try:
            run_to_end(model)
            errors.append(float(np.max(np.abs(model.local_field() - exact))))
        finally:
            model.close()
    assert errors[1] < 1e-2 and 3.0 <= errors[0] / errors[1] <= 5.0, errors


def test_the_operator_is_assembled_once_per_dt():
    model = make_heat(MPI.COMM_SELF, "heat.shape=[32, 32]", "time.scheme='crank_nicolson'", "time.dt=1e-3",
                      "time.steps=4")
    try:
        stepper = model.implicit
        model.advance(1)
        matrix, key = stepper.M, stepper.key
        state = matrix.getState() if hasattr(matrix, "getState") else None
        run_to_end(model)
        assert stepper.M is matrix and stepper.key == key == 0.5e-3
        if state is not None:
            assert matrix.getState() == state            # not modified since the first step
    finally:
        model.close()


@pytest.mark.parametrize("scheme", ["backward_euler", "crank_nicolson", "bdf2"])
@pytest.mark.parametrize("rtol, within", [(None, 1e-4), (1e-13, 1e-9)])
def test_the_heat_balance_holds_to_the_solver_tolerance(scheme, rtol, within):
    """The heat that walls and sources add (from the scheme's own balance)
    matches the change of the total heat, as closely as the solves are made."""
    options = [f"solver.petsc_options='-ksp_rtol {rtol}'"] if rtol else []
    model = make_heat(MPI.COMM_SELF, "heat.shape=[48, 40]", "heat.boundary='robin'", "heat.boundary_value=2.0",
                      "heat.boundary_transfer=5.0", "heat.source=1.5", "heat.initial='random'",
                      f"time.scheme='{scheme}'", "time.dt=1e-3", "time.steps=20", *options)
    try:
        run_to_end(model)
        d = model.diagnostics()
        assert abs(d["heat_in"]) > 1e-3
        assert abs(d["balance"]) < within * abs(d["heat_in"])
        assert d["iterations"] > 0 and d["residual"] >= 0
    finally:
        model.close()


def test_config_options_are_below_the_environment_and_the_command_line(monkeypatch):
    """[solver] petsc_options sets what PETSC_OPTIONS and '--' did not."""
    from petsc4py import PETSc

    from solver.models.heat.implicit import insert_options, parse_options, remove_options
    opts = PETSc.Options()
    opts.setValue("ksp_max_it", "77")                   # as PETSC_OPTIONS or the command line would
    try:
        put = insert_options(PETSc, parse_options("-ksp_max_it 3 -ksp_type gmres"))
        assert put == ["ksp_type"] and opts.getString("ksp_max_it") == "77"
        remove_options(PETSc, put)
        assert not opts.hasName("ksp_type")
    finally:
        opts.delValue("ksp_max_it")
    assert parse_options("-a -b 2 -c -1.5e-3 -d") == [("a", ""), ("b", "2"), ("c", "-1.5e-3"), ("d", "")]
