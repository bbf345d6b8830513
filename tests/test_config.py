"""Config parsing and validation: defaults, overrides, and one clear error per mistake."""
import pytest

from solver.config import ConfigError, dump_toml, parse_override
from solver.models import load_settings

pytestmark = pytest.mark.timeout(30)


def test_defaults_are_a_valid_heat_problem():
    s = load_settings(None)
    assert s.kind == "heat" and s.heat.ndim == 2 and s.time.dt == "auto"
    assert s.heat.extent == (1.0, 1.0) and s.heat.modes == (1, 1)


def test_file_and_overrides_combine():
    text = '[heat]\nshape = [8, 9, 10]\nboundary = "periodic"\n[time]\nsteps = 5\n'
    s = load_settings(text, "x.toml", ["heat.shape=[4,5,6]", "time.dt=0.001", "heat.boundary=neumann"])
    assert s.heat.shape == (4, 5, 6) and s.time.dt == 0.001 and s.heat.boundary == "neumann"
    assert s.heat.extent == (1.0, 1.0, 1.0) and s.time.steps == 5


def test_resolved_config_round_trips_through_toml():
    s = load_settings("[heat]\nshape = [3, 4]\nextent = 2.5\n", "x.toml", name="x")
    again = load_settings(s.to_toml(), "stored", name="x")
    assert again == s


def test_override_value_is_toml_with_bare_word_fallback():
    assert parse_override("heat.shape=[64,64]") == ("heat", "shape", [64, 64])
    assert parse_override("heat.initial=gaussian") == ("heat", "initial", "gaussian")
    assert parse_override("output.background=false") == ("output", "background", False)


@pytest.mark.parametrize("text, overrides, fragment", [
    ("[heat\nshape=[1,2]", [], "malformed TOML"),
    ("[heat]\nshpae = [4, 4]", [], "did you mean heat.shape"),
    ("[haet]\nshape = [4, 4]", [], "did you mean [heat]"),
    ("[heat]\nshape = [4, 'a']", [], "heat.shape"),
    ("[heat]\nshape = [4, 0]", [], "heat.shape: every size must be >= 1"),
    ("[heat]\nshape = [4, -3]", [], "heat.shape"),
    ("[heat]\nshape = [4]", [], "heat.shape"),
    ("[heat]\ndiffusivity = -1.0", [], "heat.diffusivity: must be > 0"),
    ("[heat]\ndiffusivity = 'fast'", [], "heat.diffusivity: expected a number"),
    ("[heat]\nboundary = 'dirichlett'", [], "did you mean 'dirichlet'"),
    ("[time]\nsteps = 1.5", [], "time.steps: expected an integer"),
    ("[time]\nsteps = true", [], "time.steps: expected an integer"),
    ("[time]\ndt = -0.1", [], "time.dt: must be > 0"),
    ("[time]\nt_end = 1.0\nsteps = 3", [], "either time.steps or time.t_end"),
    ("[heat]\nshape = [4, 4]\nextent = [1.0]", [], "heat.extent"),
    ("[backend]\nname = 'gpu'", [], "backend.name"),
    ("", ["heat.shape"], "KEY=VALUE"),
    ("", ["shape=[3,3]"], "SECTION.NAME"),
    ("", ["time.stesp=3"], "did you mean time.steps"),
    ("[heat]\ninitial = 'file'", [], "heat.file"),
])
def test_bad_input_is_one_clear_error(text, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(text, "bad.toml", overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_dump_toml_writes_valid_toml():
    import tomllib
    tables = {"a": {"x": 1, "y": 2.5, "z": "q\"uote", "w": [1, 2], "b": True}}
    assert tomllib.loads(dump_toml(tables)) == tables
