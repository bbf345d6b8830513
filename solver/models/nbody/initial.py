"""Initial conditions for n-body, as global arrays in id order.

Every rank draws the whole set from the same seeded generator and keeps its
own slice, so the particles do not depend on the rank count.  Units: G = 1
unless the config says otherwise; the standard (Henon) units of the Plummer
sphere have total mass 1 and energy -1/4.
"""
from __future__ import annotations

import math

import numpy as np

from ...config import ConfigError

FIGURE8_PERIOD = 6.32591398


def _centre(pos, vel, mass):
    """Centre of mass at the origin, at rest."""
    m = mass / mass.sum()
    pos -= m @ pos
    vel -= m @ vel
    return pos, vel, mass


def plummer(n, seed, G=1.0):
    """Plummer sphere sampled after Aarseth, Henon and Wielen (1974), in
    standard units: M = 1, E = -1/4 (scale radius a = 3 pi / 16)."""
    rng = np.random.default_rng(seed)
    mass = np.full(n, 1.0 / n)
    # radius from the cumulative mass M(r) = r^3 / (1 + r^2)^(3/2), a = 1;
    # the outermost 0.1% of mass is redrawn, as is usual, to avoid stray radii
    x1 = rng.uniform(0.0, 0.999, n)
    r = 1.0 / np.sqrt(x1 ** (-2.0 / 3.0) - 1.0)
    pos = _isotropic(rng, n) * r[:, None]
    # speed q * v_escape with q from g(q) = q^2 (1 - q^2)^(7/2) by rejection
    q = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        x4, x5 = rng.random(todo.size), rng.random(todo.size)
        ok = 0.1 * x5 < x4 * x4 * (1.0 - x4 * x4) ** 3.5
        q[todo[ok]] = x4[ok]
        todo = todo[~ok]
    speed = q * math.sqrt(2.0) * (1.0 + r * r) ** -0.25
    vel = _isotropic(rng, n) * speed[:, None]
    # from a = 1 (E = -3 pi / 64) to standard units; then G
    a = 3.0 * math.pi / 16.0
    pos *= a
    vel /= math.sqrt(a)
    vel *= math.sqrt(G)
    return _centre(pos, vel, mass)


def _isotropic(rng, n):
    """Unit vectors uniform on the sphere."""
    z = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    s = np.sqrt(1.0 - z * z)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)


def figure8(G=1.0):
    """The figure-eight choreography of three equal masses (Chenciner and
    Montgomery 2000; initial values from Simo), period 6.32591398 for G = m = 1."""
    pos = np.array([[0.97000436, -0.24308753, 0.0], [-0.97000436, 0.24308753, 0.0], [0.0, 0.0, 0.0]])
    v3 = np.array([-0.93240737, -0.86473146, 0.0])
    vel = np.array([-v3 / 2, -v3 / 2, v3]) * math.sqrt(G)
    return pos, vel, np.ones(3)


def kepler(eccentricity, G=1.0):
    """Two equal masses (total 1) on an orbit of semi-major axis 1 and the
    given eccentricity, starting at pericentre; period 2 pi / sqrt(G)."""
    e = eccentricity
    rp = 1.0 - e
    vp = math.sqrt(G * (1.0 + e) / (1.0 - e))
    mass = np.array([0.5, 0.5])
    pos = np.array([[-rp / 2, 0.0, 0.0], [rp / 2, 0.0, 0.0]])
    vel = np.array([[0.0, -vp / 2, 0.0], [0.0, vp / 2, 0.0]])
    return pos, vel, mass


def pythagorean(G=1.0):
    """Burrau's three-body problem (1913; Szebehely and Peters 1967): masses
    3, 4 and 5 at rest at the corners of a 3-4-5 right triangle, opposite
    the sides of their own length; centre of mass at the origin.  Close
    encounters, then a binary of the masses 4 and 5 and the escape of 3."""
    pos = np.array([[1.0, 3.0, 0.0], [-2.0, -1.0, 0.0], [1.0, -1.0, 0.0]])
    return pos, np.zeros((3, 3)), np.array([3.0, 4.0, 5.0])


HARD_BINARY_KT = 10.0        # the binding energy of plummer_binary's binary, in units of kT


def plummer_binary(n, seed, eccentricity, G=1.0):
    """A Plummer sphere of n equal masses 1/n in standard units, whose bodies
    0 and 1 form a hard binary: binding energy 10 kT, kT = (2/3) of the mean
    kinetic energy of a body (1 / (6 n) in virial equilibrium), so the
    semi-major axis is 3 / (10 n); the given eccentricity, starting at
    apocentre, in a plane oriented by the seed, at the place and velocity of
    a body of the sphere.  n >= 3."""
    if n < 3:
        raise ConfigError(f"nbody.n: the 'plummer_binary' start needs at least 3 bodies, got {n}")
    pos, vel, mass = plummer(n - 1, seed, G)      # body 0 (mass 2/n) becomes the binary
    m = 1.0 / n
    a = G * m * m / (2.0 * HARD_BINARY_KT * G / (6.0 * n))     # E_b = G m^2 / (2a) = 10 kT
    e = eccentricity
    rng = np.random.default_rng([seed, 1])
    normal = _isotropic(rng, 1)[0]
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    w = np.cross(normal, u)
    r = a * (1.0 + e)                              # apocentre: separation and relative speed
    speed = math.sqrt(G * 2.0 * m * (1.0 - e) / (a * (1.0 + e)))
    centre, drift = pos[0], vel[0]
    bx = np.array([centre - 0.5 * r * u, centre + 0.5 * r * u])
    bv = np.array([drift - 0.5 * speed * w, drift + 0.5 * speed * w])
    pos = np.concatenate([bx, pos[1:]])
    vel = np.concatenate([bv, vel[1:]])
    return _centre(pos, vel, np.full(n, m))


def uniform(n, seed):
    """A cold uniform cube of side 1 centred on the origin, total mass 1."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.5, 0.5, (n, 3))
    return _centre(pos, np.zeros((n, 3)), np.full(n, 1.0 / n))


def generate(nbody):
    """(position, velocity, mass) of all particles for a generated start."""
    kind = nbody.initial
    if kind == "plummer":
        return plummer(nbody.n, nbody.seed, nbody.G)
    if kind == "uniform":
        return uniform(nbody.n, nbody.seed)
    if kind == "figure8":
        return figure8(nbody.G)
    if kind == "kepler":
        return kepler(nbody.eccentricity, nbody.G)
    if kind == "pythagorean":
        return pythagorean(nbody.G)
    if kind == "plummer_binary":
        return plummer_binary(nbody.n, nbody.seed, nbody.eccentricity, nbody.G)
    raise ConfigError(f"nbody.initial: {kind!r} is not generated here")


def fixed_count(nbody):
    """The particle count a start imposes (None: nbody.n decides)."""
    return {"figure8": 3, "kepler": 2, "pythagorean": 3}.get(nbody.initial)


# what a particle file holds: n bodies, rows in any order when /nbody/id says which is which
FILE_DATASETS = {"nbody/position": ("n", 3), "nbody/velocity": ("n", 3), "nbody/mass": ("n",)}


def _read_particles_serial(path):
    import h5py

    from ...io.inputs import Want, check_arrays, check_file
    want = {name: Want(shape) for name, shape in FILE_DATASETS.items()}
    want["nbody/id"] = Want(("n",), kinds="iu", optional=True)
    info = check_file(path, "nbody.file", want, ours=False)
    n = info.sizes["n"]
    try:
        with h5py.File(path, "r") as f:
            stored = {k: f[k][...] for k in FILE_DATASETS if k in info.shapes}
            if "nbody/id" in info.shapes:
                stored["nbody/id"] = f["nbody/id"][...]
    except OSError as exc:
        raise ConfigError(f"nbody.file: cannot read {path} as HDF5: {exc}") from None
    check_arrays(info, "nbody.file", stored)
    pos, vel, mass = (np.asarray(stored[k], np.float64) for k in FILE_DATASETS)
    ids = np.asarray(stored["nbody/id"]) if "nbody/id" in stored else None
    if ids is not None:
        if not np.array_equal(np.sort(ids), np.arange(n)):
            raise ConfigError(f"nbody.file: /nbody/id in {path} is not a permutation of 0..{n - 1}")
        order = np.argsort(ids, kind="stable")
        pos, vel, mass = pos[order], vel[order], mass[order]
    return pos, vel, mass


def read_particles(path, comm):
    """(position, velocity, mass) of all particles in id order, on every rank;
    rank 0 reads and checks the file (ConfigError on every rank if it is bad).
    Their values are checked by the model that takes them."""
    from ...parallel.mpi import root_decides
    return root_decides(comm, _read_particles_serial, path)

