"""Every compiled backend against the NumPy reference."""
import numpy as np
import pytest
from mpi4py import MPI

from helpers import make_heat, make_nbody, run_to_end
from solver.backends import get_backend, numpy_ as ref, status

pytestmark = pytest.mark.timeout(300)


def compiled():
    """Every compiled backend usable here (cuda where a driver, a device and its kernels are)."""
    return [name for name in ("cuda", "cpu", "opencl") if status()[name][0]]


COMPILED = compiled()


def test_auto_prefers_a_compiled_backend_when_there_is_one():
    preferred = [name for name in ("cuda", "cpu") if name in COMPILED]
    assert get_backend("auto").name == (preferred[0] if preferred else "numpy")


# every kind of wall, one config each: values are wall temperatures, fluxes or ambient values
WALLS = {
    "dirichlet": ("heat.boundary=dirichlet", "heat.boundary_value=0.3"),
    "neumann": ("heat.boundary=neumann", "heat.boundary_value=0.3"),
    "periodic": ("heat.boundary=periodic",),
    "robin": ("heat.boundary=robin", "heat.boundary_value=0.3", "heat.boundary_transfer=2.5"),
}


def _mixed(ndim):
    """A periodic axis, and dirichlet, robin and neumann faces on the others."""
    kinds = [["periodic", "periodic"], ["dirichlet", "robin"], ["neumann", "robin"]][:ndim]
    values = [[0, 0], [1.0, -0.5], [0.2, 0.1]][:ndim]
    transfer = [[0, 0], [0, 4.0], [0, 0.5]][:ndim]
    return (f"heat.boundary={kinds}", f"heat.boundary_value={values}", f"heat.boundary_transfer={transfer}")


def _fields(tmp_path, shape):
    """A random D field (0.5 to 2) and source (-1 to 1) as .npy files: the variable-coefficient scheme."""
    rng = np.random.default_rng(len(shape))
    np.save(tmp_path / "D.npy", rng.uniform(0.5, 2.0, shape))
    np.save(tmp_path / "Q.npy", rng.uniform(-1.0, 1.0, shape))
    return (f"heat.diffusivity='{tmp_path / 'D.npy'}'", f"heat.source='{tmp_path / 'Q.npy'}'")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("walls", [*WALLS, "mixed"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11], [7, 83, 5]])
@pytest.mark.parametrize("fused", [0, 1, 5])
@pytest.mark.parametrize("variable", [False, True])
def test_heat_is_bitwise_equal_to_the_reference(backend, walls, shape, fused, variable, tmp_path):
    """Any number of steps per sweep (0: the backend's choice), 3-D tiles
    included, every kind of wall, constant and variable coefficients."""
    args = (*(WALLS[walls] if walls != "mixed" else _mixed(len(shape))), f"heat.shape={shape}",
            "heat.initial=random", "time.steps=30", *(_fields(tmp_path, shape) if variable else ()))
    model = make_heat(MPI.COMM_SELF, *args, f"heat.fused_steps={fused}", backend=backend)
    if fused:
        assert model.block == fused
    a = run_to_end(model)
    b = run_to_end(make_heat(MPI.COMM_SELF, *args, backend="numpy"))
    assert np.array_equal(a.local_field(), b.local_field())
    da, db = a.diagnostics(), b.diagnostics()
    assert da["heat_in"] == pytest.approx(db["heat_in"], rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("boundary", ["dirichlet", "neumann", "robin"])
@pytest.mark.parametrize("fused", [17, 24, 40])
def test_deep_sweeps_never_reach_past_a_wall(backend, boundary, fused):
    """More steps per sweep than a 3-D tile is rows wide: tiles widen to match."""
    args = ("heat.shape=[5,97,6]", *WALLS[boundary], "heat.initial=random", "time.steps=45")
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


def _random_box(rng, ndim, steps):
    """(shape, lo, hi, grow) of a padded block: walls, or sides with ``steps``
    valid cells beyond the box, as the heat model hands them over."""
    n = [int(rng.integers(1, 30)) for _ in range(ndim)]
    shape = tuple(k + 2 * steps for k in n)
    grow = [bool(rng.integers(0, 2)) for _ in range(2 * ndim)]
    lo, hi = [], []
    for a in range(ndim):
        low = int(rng.integers(steps, steps + n[a])) if grow[2 * a] else steps
        high = int(rng.integers(low + 1, steps + n[a] + 1)) if grow[2 * a + 1] else steps + n[a]
        lo.append(low)
        hi.append(max(high, low + 1))
    return shape, lo, hi, grow


def _stencil(mod, rng, shape, ndim, variable):
    """A HeatStencil in ``mod``'s memory with random walls (ghost = a edge + b),
    wall sums on some sides, and constant or random variable coefficients."""
    from solver.backends import HeatStencil
    walls = tuple((float(rng.choice([-1.0, 1.0, rng.uniform(-1, 1), 0.0])), float(rng.uniform(-1, 1)))
                  for _ in range(2 * ndim))
    sums = tuple(mod.from_host(rng.random(shape[:a] + shape[a + 1:])) if rng.integers(0, 2) else None
                 for a in range(ndim) for _ in (0, 1))
    if not variable:
        return HeatStencil(coeffs=(0.11, 0.13, 0.07)[:ndim], walls=walls, sums=sums)
    faces = tuple(mod.from_host(rng.uniform(0.0, 0.3 / ndim, shape)) for _ in range(ndim))
    return HeatStencil(faces=faces, source=mod.from_host(rng.uniform(-0.01, 0.01, shape)), walls=walls, sums=sums)


def _host(mod, stencil):
    """The same stencil with host copies of its arrays (the reference's)."""
    from solver.backends import HeatStencil
    copy = lambda a: None if a is None else np.array(mod.to_host(a))            # noqa: E731
    return HeatStencil(coeffs=stencil.coeffs, walls=stencil.walls, sums=tuple(copy(s) for s in stencil.sums),
                       faces=None if stencil.faces is None else tuple(copy(k) for k in stencil.faces),
                       source=copy(stencil.source))


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("variable", [False, True])
def test_fused_boxes_are_bitwise_equal_to_the_reference(backend, ndim, variable, monkeypatch):
    """Random boxes, sides, steps and walls (with their sums of edge cells)
    against the reference's heat_fused, with constant or variable
    coefficients, with 3-D tiles from 1 row to wider than the box (short
    last tiles, more steps than rows per tile, and the tiles the L2 size
    gives) and 2-D strips of 1 to 7 columns or whole rows."""
    mod = get_backend(backend)
    rng = np.random.default_rng(7 + variable)
    for case in range(150):
        steps = int(rng.integers(1, 10))
        shape, lo, hi, grow = _random_box(rng, ndim, steps)
        if hasattr(mod, "TILE_ROWS"):
            monkeypatch.setattr(mod, "TILE_ROWS", int(rng.integers(0, 12)))
            monkeypatch.setattr(mod, "STRIP_COLUMNS", int(rng.integers(0, 8)))
        stencil = _stencil(mod, rng, shape, ndim, variable)
        expected = _host(mod, stencil)
        src = rng.random(shape)
        a, b = mod.from_host(np.full(shape, -7.0)), np.full(shape, -7.0)
        mod.heat_fused(mod.from_host(src), a, stencil, steps, lo, hi, grow)
        ref.heat_fused(src.copy(), b, expected, steps, lo, hi, grow)
        assert np.array_equal(mod.to_host(a), b), (shape, steps, lo, hi, grow)
        for k, (got, want) in enumerate(zip(stencil.sums, expected.sums)):
            if want is not None:
                assert np.array_equal(mod.to_host(got), want), ("sums", k, shape, steps, lo, hi, grow)


def _fake_cache(root, entries):
    for k, (level, kind, size, shared) in enumerate(entries):
        d = root / f"index{k}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
        if shared is not None:
            (d / "shared_cpu_list").write_text(f"{shared}\n")


def test_cache_sizes_are_read_from_sysfs(tmp_path):
    from solver.backends import cpu
    _fake_cache(tmp_path, [(1, "Data", "48K", "0"), (1, "Instruction", "64K", "0"),
                           (2, "Unified", "2048K", "0"), (3, "Unified", "480M", "0-3,8-11")])
    assert cpu.cache_sizes(str(tmp_path)) == {1: 48 << 10, 2: 2 << 20, 3: (480 << 20) // 8}
    _fake_cache(tmp_path / "other", [(2, "Unified", "1M", None), (3, "Unified", "garbage", "0")])
    assert cpu.cache_sizes(str(tmp_path / "other")) == {2: 1 << 20}
    assert cpu.cache_sizes(str(tmp_path / "missing")) == {}


def test_steps_per_sweep_follow_the_cache():
    from solver.backends import cpu
    assert cpu.heat_block((4098, 4098), l2=2 << 20) == 8        # 2-D: rings of 4 rows in 3/4 of L2
    assert cpu.heat_block((16386, 16386), l2=2 << 20) == 3
    assert cpu.heat_block((258, 258, 258), l2=2 << 20) == 8
    assert cpu.heat_block((258, 258, 258), l2=1 << 20) < 8
    assert cpu.heat_block((258, 258, 258), l2=64 << 10) == 1
    for shape in ((34, 34, 34), (258, 258, 258), (1026, 1026, 1026)):
        for steps in range(1, 9):
            assert cpu._tile_rows(shape, steps, l2=2 << 20) >= steps


def test_variable_sweeps_keep_eight_steps_in_strips_that_fit_the_cache():
    """2-D variable coefficients: strips sized from L2 keep eight steps per
    sweep on a 4096-wide block; 3-D tiles count the fields' rows."""
    from solver.backends import cpu
    assert cpu._strip_columns(0) == 0
    assert cpu.heat_block((4098, 4098), 3, l2=2 << 20) == 8
    assert cpu._strip_columns(3, l2=2 << 20) < 4098
    assert cpu._tile_rows((258, 258, 258), 4, l2=2 << 20, fields=4) < cpu._tile_rows((258, 258, 258), 4, l2=2 << 20)


@pytest.mark.parametrize("width, steps", [(3, 1), (4, 5), (256, 8), (1000, 3)])
def test_strips_cover_the_box_once_and_never_reach_past_a_wall(width, steps):
    from solver.backends import cpu
    lo, hi = np.array([5, 7]), np.array([40, 7 + 997])
    grow, acc = np.array([False, True, False, False]), np.array([True, False, True, True])
    strips = list(cpu._strips(lo, hi, grow, acc, steps, width))
    assert strips[0][0][1] == lo[1] and strips[-1][1][1] == hi[1]
    for before, after in zip(strips, strips[1:]):
        assert before[1][1] == after[0][1]                      # next to each other, no gap, no overlap
    for k, (slo, shi, sgrow, sacc) in enumerate(strips):
        assert shi[1] - slo[1] >= steps
        assert sgrow[2] == (k > 0) and sgrow[3] == (k < len(strips) - 1)
        assert sacc[2] == (k == 0) and sacc[3] == (k == len(strips) - 1)
