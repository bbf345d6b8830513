"""The ``[nbody]`` section: its keys, defaults and validation."""
from __future__ import annotations

from dataclasses import dataclass

from ...config import LENGTHS, SCALES, ConfigError, boolean, choice, integer, number, string

INITIAL = ("plummer", "figure8", "kepler", "uniform", "pythagorean", "plummer_binary", "file")
INTEGRATORS = ("leapfrog", "hermite")
DEFAULTS = {
    "n": 1000, "initial": "plummer", "softening": 0.01, "seed": 0,
    "precision": "float64", "G": 1.0, "file": "", "eccentricity": 0.5,
    "decomposition": "allgather", "energy_warning": 1e-3,
    "integrator": "leapfrog", "eta": 0.02, "adaptive": True,
}
# the problem and its start: a restart must not change them
PHYSICS = ("n", "softening", "G", "precision", "initial", "seed", "eccentricity")


@dataclass(frozen=True)
class NBodySettings:
    n: int
    initial: str
    softening: float
    seed: int
    precision: str
    G: float
    file: str
    eccentricity: float      # of the 'kepler' start
    decomposition: str       # 'allgather' (bitwise on any rank count) or 'ring'
    energy_warning: float    # relative energy error above which the run warns; 0: never
    integrator: str          # 'leapfrog' (one fixed step) or 'hermite' (fourth order, block time steps)
    eta: float               # Hermite: Aarseth's time-step parameter
    adaptive: bool           # Hermite: individual block steps (false: every body takes time.dt)


def validate(b: dict, explicit: set) -> NBodySettings:
    """Frozen settings from the merged table ``b`` (defaults, file, --set)."""
    nbody = NBodySettings(
        n=integer("nbody.n", b["n"], lo=1),
        initial=choice("nbody.initial", b["initial"], INITIAL),
        softening=number("nbody.softening", b["softening"], nonneg=True, magnitude=LENGTHS),
        seed=integer("nbody.seed", b["seed"], lo=0),
        precision=choice("nbody.precision", b["precision"], ("float64", "float32")),
        G=number("nbody.G", b["G"], positive=True, magnitude=SCALES),
        file=string("nbody.file", b["file"]),
        eccentricity=number("nbody.eccentricity", b["eccentricity"], nonneg=True),
        decomposition=choice("nbody.decomposition", b["decomposition"], ("allgather", "ring")),
        energy_warning=number("nbody.energy_warning", b["energy_warning"], nonneg=True),
        integrator=choice("nbody.integrator", b["integrator"], INTEGRATORS),
        eta=number("nbody.eta", b["eta"], positive=True),
        adaptive=boolean("nbody.adaptive", b["adaptive"]),
    )
    if nbody.eccentricity >= 1:
        raise ConfigError(f"nbody.eccentricity: a bound orbit needs 0 <= e < 1, got {nbody.eccentricity}")
    if nbody.initial == "file" and not nbody.file:
        raise ConfigError("nbody.file: nbody.initial = 'file' needs nbody.file, the path of an HDF5 file "
                          "with /nbody/position, /nbody/velocity and /nbody/mass")
    if nbody.eta > 1:
        raise ConfigError(f"nbody.eta: Aarseth's time-step parameter must be in (0, 1] (typically 0.005 to 0.05), "
                          f"got {nbody.eta:g}")
    if nbody.integrator == "hermite" and nbody.precision != "float64":
        raise ConfigError("nbody.integrator = 'hermite' needs nbody.precision = 'float64': its corrector and "
                          "time steps take differences of forces a short step apart, which float32 cannot resolve")
    return nbody
