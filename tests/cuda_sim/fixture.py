"""``cuda_sim``: a pytest fixture that installs the simulated driver for one
test (import it into a test module: ``from cuda_sim.fixture import cuda_sim``)."""
import pytest

import cuda_sim as sim


@pytest.fixture
def cuda_sim():
    sim.install()
    sim.reset_counts()
    try:
        yield sim
    finally:
        sim.uninstall()
