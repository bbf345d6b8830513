"""Implicit time stepping of du/dt = A u + f through PETSc (petsc4py).

Imported only when ``time.scheme`` names an implicit scheme, so a run
without PETSc starts as fast as before.  The operator is ``operator.py``'s
(the face coefficients and wall terms the explicit stencil applies), put
into a matrix on a DMDA that has *our* decomposition: the same process grid
and ownership ranges, PETSc's x axis being our last (fastest) array axis, so
a rank's PETSc vector is exactly its block in C order.

    backward_euler    (I - dt A) u1 = u0 + dt f                        first order, L-stable
    crank_nicolson    (I - dt/2 A) u1 = (I + dt/2 A) u0 + dt f         second order, A-stable
    bdf2              (I - 2/3 dt A) u2 = 4/3 u1 - 1/3 u0 + 2/3 dt f   second order, L-stable;
                      its first step after a start or a restart is a backward Euler step

The system matrix I - theta dt A is assembled when dt (or theta) changes,
and the preconditioner set up with it: never per step.  Defaults (measured,
see docs/performance.md): CG with hypre's BoomerAMG (5-6 iterations from
512^2 to 4096^2 at rtol 1e-8), or where PETSc has no hypre geometric
multigrid on the DMDA hierarchy (Q0 interpolation, for cell-centred grids;
Galerkin coarse operators: 8 to 24 iterations over the same grids), and a
relative tolerance on the step's initial residual from the scheme's
truncation error.  Options in PETSc's options database override them:
``[solver] petsc_options``, then ``PETSC_OPTIONS``, then the words after
``--`` on the command line (later ones win).
"""
from __future__ import annotations

import shlex
import sys

import numpy as np

from ...config import ConfigError

THETA = {"backward_euler": 1.0, "crank_nicolson": 0.5, "bdf2": 2.0 / 3.0}
# Relative tolerance on the residual at the step's start, i.e. on the
# change one step makes, about lambda dt |u| for a mode decaying at rate
# lambda: over a time t the solves add about rtol lambda t |u| of error.  The
# scheme's own error over t, for a dt chosen to reach a relative accuracy e,
# is e; these keep the solves' share 100x below it for e down to 1e-3
# (backward Euler: smaller e takes it tens of thousands of steps) and 1e-4
# (the second-order schemes).  Tighter: -ksp_rtol.
RTOL = {"backward_euler": 1e-5, "crank_nicolson": 1e-6, "bdf2": 1e-6}
INSTALL = ("petsc4py is not installed: implicit time stepping (time.scheme = {scheme!r}) needs PETSc and "
           "petsc4py of the same version, built against this MPI (here: apt-get install libpetsc-real-dev, "
           "then PETSC_DIR=/usr/lib/petsc pip install --no-build-isolation --no-binary petsc4py "
           "'petsc4py==<PETSc version>' 'Cython<3'; on a cluster, load the site's PETSc module); "
           "explicit runs do not need it")

_command_line: list = []      # the words after ``--`` (cli.py)


def set_command_line(words):
    """PETSc options given after ``--`` on the command line."""
    _command_line[:] = list(words)


class SolveFailed(FloatingPointError):
    """A linear solve did not converge: the state is the last good one and
    the driver writes it before the run stops (exit status 4)."""
    checkpoint_state = True


def petsc(scheme="backward_euler"):
    """PETSc, initialised with the command line's options (once per
    process); a missing petsc4py is one line saying what to install."""
    try:
        import petsc4py
    except ImportError:
        raise ConfigError(INSTALL.format(scheme=scheme)) from None
    if "petsc4py.PETSc" not in sys.modules:
        petsc4py.init([sys.argv[0] if sys.argv else "solver"] + _command_line)
    from petsc4py import PETSc
    return PETSc


def describe() -> str:
    """PETSc's version and external packages, for ``solver info``."""
    try:
        import petsc4py
    except ImportError:
        return "not available (petsc4py is not installed; explicit schemes only)"
    from petsc4py import PETSc
    version = ".".join(map(str, PETSc.Sys.getVersion()))
    packages = _external_packages(petsc4py)
    return f"{version} (petsc4py {petsc4py.__version__}; external packages: {', '.join(packages) or 'none'})"


def _external_packages(petsc4py) -> list:
    """The packages PETSc was configured with (from its petscconf.h)."""
    import os
    import re
    conf = petsc4py.get_config()
    for directory in (os.path.join(conf.get("PETSC_DIR", ""), conf.get("PETSC_ARCH", ""), "include"),
                      os.path.join(conf.get("PETSC_DIR", ""), "include")):
        path = os.path.join(directory, "petscconf.h")
        if os.path.isfile(path):
            with open(path) as fh:
                found = re.findall(r"#define PETSC_HAVE_([A-Z0-9_]+) 1", fh.read())
            known = ("HYPRE", "MUMPS", "SUPERLU_DIST", "SUPERLU", "SCALAPACK", "METIS", "PARMETIS", "PTSCOTCH",
                     "HDF5", "FFTW", "SUITESPARSE", "ML", "HWLOC", "YAML")
            return [name.lower() for name in known if name in found]
    return []


def parse_options(text) -> list[tuple[str, str]]:
    """[(name, value)] of an options string ('-ksp_type cg -ksp_monitor');
    a word that does not start with '-' (or is a negative number) is the
    value of the option before it."""
    pairs = []
    for word in shlex.split(text or ""):
        if word.startswith("-") and not _is_number(word):
            pairs.append([word.lstrip("-"), ""])
        elif pairs and not pairs[-1][1]:
            pairs[-1][1] = word
        else:
            raise ConfigError(f"solver.petsc_options: {word!r} is not an option (-NAME) or the value of one")
    return [tuple(p) for p in pairs]


def _is_number(word):
    try:
        float(word)
        return True
    except ValueError:
        return False


def reason_name(PETSc, reason) -> str:
    """PETSc's name of a KSP converged reason (DIVERGED_ITS, ...)."""
    names = {v: k for k, v in vars(PETSc.KSP.ConvergedReason).items() if isinstance(v, int) and k.isupper()}
    return names.get(int(reason), str(reason))


def ownership(decomp) -> tuple:
    """Cells per rank along each axis, in PETSc's axis order (x = our last axis)."""
    from ...parallel.cart import block_range
    return tuple([block_range(n, p, i)[1] for i in range(p)]
                 for n, p in zip(reversed(decomp.global_shape), reversed(decomp.dims)))


def mg_levels(decomp, smallest=4) -> int:
    """Levels of the DMDA hierarchy: halve while every axis stays even and
    every rank keeps at least ``smallest`` cells per axis."""
    levels, sizes = 1, list(decomp.global_shape)
    while all(n % 2 == 0 and n // 2 >= smallest * p for n, p in zip(sizes, decomp.dims)):
        sizes = [n // 2 for n in sizes]
        levels += 1
    return min(levels, 12)


class ImplicitStepper:
    """One rank's part of the implicit stepping (every method collective)."""

    def __init__(self, heat, decomp, scheme, diffusivity=None, source=None, options=""):
        self.PETSc = PETSc = petsc(scheme)
        self.options = options
        self.scheme, self.decomp = scheme, decomp
        n = decomp.local_shape
        self.shape = n
        btype = PETSc.DM.BoundaryType
        self.da = PETSc.DMDA().create(
            dim=len(n), dof=1, sizes=tuple(reversed(decomp.global_shape)),
            proc_sizes=tuple(reversed(decomp.dims)), ownership_ranges=ownership(decomp),
            boundary_type=tuple(btype.PERIODIC if p else btype.NONE for p in reversed(decomp.periods)),
            stencil_type=PETSc.DMDA.StencilType.STAR, stencil_width=1, comm=decomp.comm)
        self.da.setInterpolationType(PETSc.DMDA.InterpolationType.Q0)
        ranges = self.da.getRanges()           # (start, end) per PETSc axis: must be our block
        mine = tuple((s.start, s.stop) for s in reversed(decomp.global_slices))
        if tuple(tuple(r) for r in ranges) != mine:
            raise RuntimeError(f"the DMDA's block {ranges} is not this rank's block {mine}")
        from . import operator              # (not at import: cli.py reads the '--' options before MPI starts)
        K, f = operator.implicit_terms(heat, decomp, diffusivity, source)
        self.A = self._assemble(K)
        self.f = self.da.createGlobalVec()
        self.f.array[:] = f.ravel()
        ones = self.f.duplicate()
        ones.set(1.0)
        self.colsum = self.f.duplicate()        # 1^T A: sum(A u) = colsum . u (the walls' share)
        self.A.multTranspose(ones, self.colsum)
        ones.destroy()
        self.F = float(np.sum(f))               # this rank's share of sum(f)
        self.x, self.b, self.work = (self.da.createGlobalVec() for _ in range(3))
        self.previous = None                    # second-order schemes: the state one step back
        self.last_increment = 0.0               # BDF2: this rank's share of the last step's heat change
        self.M, self.key = None, None
        self.ksp = self._solver()
        self.iterations, self.residual, self.solves = 0, 0.0, 0

    # --- the operator --------------------------------------------------------
    def _assemble(self, K):
        """A (du/dt = A u + f) from the low-face coefficients ``K``: per row
        the diagonal and 2 ndim neighbours (a wall side points at the
        diagonal with 0), added, so a periodic axis of one or two cells sums
        correctly; the global indices of neighbours come through the halo
        exchange."""
        from . import operator
        n, nd = self.shape, len(self.shape)
        start = self._start()
        size = int(np.prod(n))
        index = (start + np.arange(size, dtype=np.float64)).reshape(n)
        ghosts = operator._padded(self.decomp, 1, index, False)
        cols, vals = [index], [np.zeros(n)]
        for a in range(nd):
            for side in (0, 1):
                step = 2 * side - 1
                neighbour = np.array(ghosts[tuple(slice(1 + step, 1 + step + k) if b == a else slice(1, 1 + k)
                                                  for b, k in enumerate(n))])
                coef = np.array(K[a][tuple(slice(1 + side, 1 + side + k) if b == a else slice(1, 1 + k)
                                           for b, k in enumerate(n))])
                if self.decomp.at_wall(a, side):
                    edge = tuple((k - 1 if side else 0) if b == a else slice(None) for b, k in enumerate(n))
                    neighbour[edge] = index[edge]     # a wall face: the diagonal only
                    vals[0][edge] -= coef[edge]
                    coef[edge] = 0.0
                vals[0] -= coef
                cols.append(neighbour)
                vals.append(coef)
        width = 1 + 2 * nd
        itype = self.PETSc.IntType
        J = np.stack([c.ravel() for c in cols], axis=1).astype(itype).ravel()
        V = np.stack([v.ravel() for v in vals], axis=1).ravel()
        indptr = np.arange(0, width * size + 1, width, dtype=itype)
        A = self.da.createMatrix()
        A.setValuesCSR(indptr, J, V, addv=self.PETSc.InsertMode.ADD_VALUES)
        A.assemble()
        return A

    def _start(self) -> int:
        """The global index of this rank's first cell."""
        vec = self.da.createGlobalVec()
        try:
            return vec.getOwnershipRange()[0]
        finally:
            vec.destroy()

    def _solver(self):
        """The KSP: our defaults, under the config's options, under
        PETSC_OPTIONS and the command line's (which PETSc read at start)."""
        PETSc = self.PETSc
        ksp = PETSc.KSP().create(comm=self.decomp.comm)
        ksp.setDM(self.da)
        ksp.setDMActive(False)                  # the operator is ours; the DM gives the hierarchy
        wanted = dict(parse_options(defaults(PETSc, self.scheme, self.decomp)))
        wanted.update(parse_options(self.options))
        self._inserted = insert_options(PETSc, wanted.items())
        ksp.setFromOptions()
        ksp.setInitialGuessNonzero(True)
        self.tolerances = ksp.getTolerances()     # (rtol, atol, dtol, max_it), the options' say
        return ksp

    def set_dt(self, dt, theta):
        """The system I - theta dt A, assembled (and the preconditioner set
        up) only when theta dt changes."""
        key = theta * dt
        if key == self.key:
            return
        if self.M is None:
            self.M = self.A.duplicate(copy=True)
        else:
            self.M.zeroEntries()
            self.M.axpy(1.0, self.A, structure=self.PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        self.M.scale(-key)
        self.M.shift(1.0)
        self.ksp.setOperators(self.M, self.M)
        self.ksp.setUp()
        self.key = key

    # --- stepping -------------------------------------------------------------
    def load(self, local):
        """Start from this rank's block ``local`` (forgets the step before)."""
        self.x.array[:] = np.asarray(local).ravel()
        self.previous = None

    def state(self) -> np.ndarray:
        """This rank's block of the state (a view of PETSc's vector)."""
        return self.x.array.reshape(self.shape)

    def step(self, dt) -> float:
        """One step of ``dt``; returns this rank's share of the heat added
        (per unit cell volume).  SolveFailed leaves the state as it was."""
        x, b, w = self.x, self.b, self.work
        first_bdf2 = self.scheme == "bdf2" and self.previous is None
        theta = 1.0 if first_bdf2 else THETA[self.scheme]
        self.set_dt(dt, theta)
        old = x.copy()
        if self.scheme == "crank_nicolson":
            self.A.mult(x, b)                          # b = u + dt/2 A u + dt f
            b.aypx(0.5 * dt, x)
            b.axpy(dt, self.f)
        elif self.scheme == "bdf2" and not first_bdf2:
            x.copy(b)                                  # b = 4/3 u1 - 1/3 u0 + 2/3 dt f
            b.scale(4.0 / 3.0)
            b.axpy(-1.0 / 3.0, self.previous)
            b.axpy(2.0 / 3.0 * dt, self.f)
        else:
            x.copy(b)                                  # b = u + dt f
            b.axpy(dt, self.f)
        rtol, atol = self.tolerances[:2]
        if self.previous is not None:
            # Start from 2 u1 - u0 (second order schemes), but stop where
            # starting from u1 would: rtol times the residual at u1, the
            # change the step makes (the start is closer: fewer iterations).
            self.M.mult(x, w)
            w.aypx(-1.0, b)
            atol, rtol = max(atol, rtol * w.norm()), 0.0
            x.scale(2.0)
            x.axpy(-1.0, self.previous)
        self.ksp.setTolerances(rtol=rtol, atol=atol)
        self.ksp.solve(b, x)
        reason = self.ksp.getConvergedReason()
        its, rnorm = self.ksp.getIterationNumber(), self.ksp.getResidualNorm()
        if reason < 0:
            old.copy(x)
            old.destroy()
            raise SolveFailed(f"the {self.scheme} step's linear solve did not converge: PETSc's reason "
                              f"{reason_name(self.PETSc, reason)} after {its} iterations (residual {rnorm:.3g})")
        self.iterations += its
        self.solves += 1
        self.residual = rnorm
        # heat added: sum(u1 - u0) from the scheme's own balance (interior fluxes cancel in colsum)
        c = self.colsum.array
        if self.scheme == "crank_nicolson":
            inc = dt * (0.5 * float(c @ (old.array + x.array)) + self.F)
        elif self.scheme == "bdf2" and not first_bdf2:
            inc = self.last_increment / 3.0 + 2.0 / 3.0 * dt * (float(c @ x.array) + self.F)
        else:
            inc = dt * (float(c @ x.array) + self.F)
        self.last_increment = inc
        if self.scheme != "backward_euler":
            if self.previous is None:
                self.previous = old
            else:
                old.copy(self.previous)
                old.destroy()
        else:
            old.destroy()
        return inc

    def take_counts(self) -> tuple[float, float]:
        """(mean iterations per solve, latest residual norm) since the last call."""
        mean = self.iterations / self.solves if self.solves else 0.0
        self.iterations, self.solves = 0, 0
        return mean, self.residual

    def destroy(self):
        for obj in (self.ksp, self.M, self.A, self.f, self.colsum, self.x, self.b, self.work, self.previous, self.da):
            if obj is not None:
                obj.destroy()
        remove_options(self.PETSc, getattr(self, "_inserted", ()))


def defaults(PETSc, scheme, decomp) -> str:
    """Our solver options (see the module's docstring): CG with hypre's
    BoomerAMG where PETSc has hypre, else geometric multigrid on the DMDA
    hierarchy; the tolerance is relative to the step's initial residual,
    the change the step makes, not to |b| ~ |u|."""
    pc = "-pc_type hypre" if PETSc.Sys.hasExternalPackage("hypre") else "-pc_type mg"
    pc += f" -pc_hypre_type boomeramg -pc_mg_levels {mg_levels(decomp)} -pc_mg_galerkin both"   # for either
    return (f"-ksp_type cg -ksp_rtol {RTOL[scheme]!r} -ksp_atol 1e-50 -ksp_max_it 500 "
            f"-ksp_norm_type unpreconditioned -ksp_converged_use_initial_residual_norm {pc}")


def insert_options(PETSc, pairs) -> list:
    """Put the options ``pairs`` into PETSc's database where neither
    PETSC_OPTIONS nor the command line set them; returns the names put."""
    opts, put = PETSc.Options(), []
    for name, value in pairs:
        if not opts.hasName(name):
            opts.setValue(name, value)
            put.append(name)
    return put


def remove_options(PETSc, names):
    opts = PETSc.Options()
    for name in names:
        opts.delValue(name)
