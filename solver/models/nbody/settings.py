"""The ``[nbody]`` section: its keys, defaults and validation."""
from __future__ import annotations

from dataclasses import dataclass

from ...config import LENGTHS, SCALES, ConfigError, choice, integer, number, string

INITIAL = ("plummer", "figure8", "kepler", "uniform", "file")
DEFAULTS = {
    "n": 1000, "initial": "plummer", "softening": 0.01, "seed": 0,
    "precision": "float64", "G": 1.0, "file": "", "eccentricity": 0.5,
    "decomposition": "allgather", "energy_warning": 1e-3,
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
    )
    if nbody.eccentricity >= 1:
        raise ConfigError(f"nbody.eccentricity: a bound orbit needs 0 <= e < 1, got {nbody.eccentricity}")
    if nbody.initial == "file" and not nbody.file:
        raise ConfigError("nbody.file: nbody.initial = 'file' needs nbody.file, the path of an HDF5 file "
                          "with /nbody/position, /nbody/velocity and /nbody/mass")
    return nbody
