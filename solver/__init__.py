"""solver: SPMD heat diffusion and n-body on MPI.

The Python API (see README, "From Python")::

    import solver
    sim = solver.Simulation.from_toml("configs/heat2d.toml", set={"time.steps": 200})
    sim.run()
    u = sim.field(gather=True)

``import solver`` is cheap: it starts neither MPI nor NumPy; the names below
are loaded on first use, and MPI starts with the first Simulation.
"""
__version__ = "0.1.0"

__all__ = ["Simulation", "ConfigError", "WriterError", "__version__"]


def __getattr__(name):
    """The public names, each imported on first use (PEP 562)."""
    if name == "Simulation":
        from .api import Simulation as value
    elif name == "ConfigError":
        from .config import ConfigError as value
    elif name == "WriterError":
        from .io.writer import WriterError as value
    else:
        raise AttributeError(f"module 'solver' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
