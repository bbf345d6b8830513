"""Time integrators for particle systems.

Each is a function ``step(x, v, a, dt, accel) -> a`` that advances positions
``x`` and velocities ``v`` in place by one step and returns the acceleration
at the new positions; ``a`` is the acceleration at the old ones (kept between
steps, so a step costs one force evaluation).  New schemes (e.g. a
fourth-order composition) slot in as further functions in INTEGRATORS.
"""
from __future__ import annotations


def leapfrog_kdk(x, v, a, dt, accel):
    """Kick-drift-kick leapfrog: second order, symplectic, time reversible."""
    v += (0.5 * dt) * a
    x += dt * v
    a = accel(x)
    v += (0.5 * dt) * a
    return a


INTEGRATORS = {"leapfrog": leapfrog_kdk}
