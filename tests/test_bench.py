"""The benchmark commands run end to end and report what they claim to;
their figures themselves belong to docs/performance.md, not to tests."""
import json

import pytest

from conftest import run_solver
from solver.driver import Timers

pytestmark = pytest.mark.timeout(300)


def test_compute_bench_prints_the_table_on_two_ranks(tmp_path):
    r = run_solver(["bench", "--quick", "--repeats", "1", "--seconds", "0.05", "--dir", str(tmp_path)], np=2,
                   timeout=280)
    assert r.returncode == 0, r.stderr
    assert "| problem | size per rank | backend | ranks |" in r.stdout
    assert "copy bandwidth" in r.stdout
    results = json.loads((tmp_path / "compute.json").read_text())
    cases = {(row["problem"], row["backend"], row["ranks"]) for row in results["rows"]}
    for problem in ("heat2d", "heat3d", "nbody"):
        assert {(problem, "numpy", 1), (problem, "numpy", 2)} <= cases
    for row in results["rows"]:
        assert row["rate"] > 0 and row["steps"] >= 1
        assert sum(row["phases"].values()) == pytest.approx(1.0, abs=0.05) or row["phases"]["other"] == 0
        if row["ranks"] == 2:
            assert row["weak"] > 0


@pytest.mark.parametrize("args, names", [(["--repeats", "0"], "--repeats"), (["--backends", "fortran"], "fortran")])
def test_bad_bench_arguments_are_one_line(tmp_path, args, names):
    r = run_solver(["bench", *args, "--dir", str(tmp_path)])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and names in r.stderr


def test_startup_bench_times_the_first_step():
    r = run_solver(["bench", "startup", "--ranks", "2", "--repeats", "1"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert "time to the first step:" in r.stdout


def test_nested_phases_are_counted_once():
    import time
    timers = Timers()
    t0 = time.perf_counter()
    with timers("compute"):
        time.sleep(0.02)
        with timers("halo"):
            time.sleep(0.03)
    wall = time.perf_counter() - t0
    assert timers.seconds["halo"] >= 0.03 and timers.seconds["compute"] >= 0.02
    assert timers.seconds["compute"] + timers.seconds["halo"] == pytest.approx(wall, abs=2e-3)
