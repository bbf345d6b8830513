"""The models, and the one registry that the command line, restart, bench,
XDMF sidecars and pictures consult.

Each model is a package here exposing the same names:

    kind                  its ``problem.kind``, config section and checkpoints' ``problem``
    DEFAULTS, validate    its config section: keys with defaults, and
                          validate(table, explicit keys) -> frozen settings
    PHYSICS               the keys of that section a restart must not change
    datasets(settings)    what its checkpoints hold ({name: io.inputs.Want}), checked before a restart
    for_restart(settings, info)
                          the settings a checkpoint fixes beyond the config
    make(settings, comm, backend, restart)
                          the model object (collective)
    xdmf_grid(f, href, indent), picture(path, out_dir), history_panels(cols, path)
                          how its output is shown
    View(paths, look, kind)
                          how a series of its frames is drawn with one colour range and view:
                          new_figure(), draw(fig, path, index, tail), and optionally draw_tracks()
    SNAPSHOT_FIELDS       {field name output.snapshot_fields may give: its dataset}

A new model is a new package and a name in ``KINDS``.  Importing this
module and the model packages is cheap (no MPI, no HDF5), because the
config is read before MPI starts.
"""
from __future__ import annotations

import importlib

from .. import config

KINDS = ("heat", "nbody")

# The problem `python -m solver` runs with no config: a 2D plate whose
# sine start decays to about a quarter in 5000 steps (seconds on a laptop),
# with a snapshot every 250 steps from step 0 (a series to plot or animate).
DEFAULT_PROBLEM = {
    "heat": {"shape": [256, 256]},
    "time": {"steps": 5000},
    "output": {"checkpoint_every": 2500, "snapshot_every": 250},
}


def get(kind: str):
    """The package of model ``kind``."""
    if kind not in KINDS:
        raise config.ConfigError(f"problem {kind!r} is not one this solver knows ({', '.join(KINDS)})")
    return importlib.import_module(f".{kind}", __name__)


def load_settings(text: str | None = None, source: str = "<default>", overrides=(),
                  name: str = "default") -> config.Settings:
    """Parse TOML ``text`` (None: the built-in default problem), apply ``--set``
    overrides and validate every section into frozen settings."""
    return config.load(text, source, overrides, name, {kind: get(kind) for kind in KINDS}, DEFAULT_PROBLEM)


def make_model(settings, comm, backend, restart):
    """The model the settings ask for (collective)."""
    return get(settings.kind).make(settings, comm, backend, restart)
