"""Files a user names that are not what they should be, and directories
that hold the user's own files: one line and exit 2, quickly, with nothing
of the user's replaced and nothing written through a link."""
import json
import os

import pytest

from conftest import run_solver
from solver.config import MAX_TEXT_BYTES, ConfigError, read_small_text
from solver.io.owned import LIST, check_replaceable, write_results

pytestmark = pytest.mark.timeout(120)


def _one_error_line(r, *fragments):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("solver: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _config(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "config.toml"
        os.mkfifo(path)                      # nobody writes: opening it for reading would wait forever
        return str(path), "is a FIFO"
    if kind == "device":
        return "/dev/zero", "is a character device"
    if kind == "directory":
        (tmp_path / "config.toml").mkdir()
        return str(tmp_path / "config.toml"), "is a directory"
    path = tmp_path / "config.toml"          # a valid TOML comment, 2 MiB long
    path.write_bytes(b"#" + b"x" * (2 * MAX_TEXT_BYTES) + b"\n")
    return str(path), "larger than 1 MiB"


@pytest.mark.parametrize("np_, kind", [(None, "fifo"), (None, "device"), (None, "directory"), (None, "large"),
                                       (2, "fifo")])
def test_config_must_be_a_small_regular_file(tmp_path, np_, kind):
    path, fragment = _config(tmp_path, kind)
    r = run_solver(["run", path, "--output", str(tmp_path / "out")], np=np_, timeout=90)
    assert r.returncode == 2, (r.returncode, r.stderr)
    _one_error_line(r, "config file", path, fragment)
    assert not (tmp_path / "out").exists()


def test_fifo_put_in_place_after_the_check_does_not_hang(tmp_path, monkeypatch):
    """The open is non-blocking and the open descriptor is checked again."""
    fifo = str(tmp_path / "swapped.toml")
    os.mkfifo(fifo)
    regular = os.stat(__file__)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if p == fifo else real_stat(p, *a, **k))
    with pytest.raises(ConfigError, match="is a FIFO"):
        read_small_text(fifo, "config file")


def test_small_text_is_read_whole(tmp_path):
    path = tmp_path / "a.toml"
    path.write_bytes(b"x" * MAX_TEXT_BYTES)
    assert len(read_small_text(str(path), "config file")) == MAX_TEXT_BYTES


# ----------------------------------------------------------------------------
# plot --out and bench --dir: only over what they wrote themselves
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    pytest.importorskip("matplotlib")
    run = str(tmp_path_factory.mktemp("hostile") / "run")
    r = run_solver(["run", "--set", "heat.shape=[8,8]", "--set", "time.steps=2", "--output", run])
    assert r.returncode == 0, r.stderr
    return run


FIELD = "field_000000002.png"


def test_plot_replaces_only_images_it_wrote(run_dir, tmp_path):
    out = tmp_path / "plots"
    for _ in range(2):                       # the second run replaces the first one's images
        r = run_solver(["plot", run_dir, "--out", str(out)])
        assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == sorted([LIST, FIELD, "history.png"])
    (out / "history.png").write_bytes(b"the user's own picture")
    r = run_solver(["plot", run_dir, "--out", str(out)])
    assert r.returncode == 2
    _one_error_line(r, str(out / "history.png"), "--out")
    assert (out / "history.png").read_bytes() == b"the user's own picture"


def test_plot_never_replaces_a_users_file(run_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "history.png").write_bytes(b"keep me")
    r = run_solver(["plot", run_dir, "--out", str(out)])
    assert r.returncode == 2
    _one_error_line(r, str(out / "history.png"), "another plot --out directory")
    assert os.listdir(out) == ["history.png"] and (out / "history.png").read_bytes() == b"keep me"


def test_plot_never_writes_through_a_link(run_dir, tmp_path):
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"not to be touched")
    out = tmp_path / "linked"
    out.mkdir()
    os.symlink(target, out / FIELD)
    r = run_solver(["plot", run_dir, "--out", str(out)])
    assert r.returncode == 2
    _one_error_line(r, str(out / FIELD))
    assert target.read_bytes() == b"not to be touched" and os.path.islink(out / FIELD)


def test_picture_replaces_a_link_instead_of_writing_through_it(run_dir, tmp_path):
    """A snapshot or plot image is written under a new name and renamed: a
    link planted at its name is replaced, its target left alone."""
    from solver.models.heat.output import picture
    target = tmp_path / "target.png"
    target.write_bytes(b"not to be touched")
    os.symlink(target, tmp_path / FIELD)
    written = picture(os.path.join(run_dir, "checkpoints", "step_000000002.h5"), str(tmp_path))
    assert written == str(tmp_path / FIELD)
    assert target.read_bytes() == b"not to be touched"
    assert not os.path.islink(written) and open(written, "rb").read(4) == b"\x89PNG"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_plot_out_that_cannot_be_a_directory_is_one_line(run_dir, tmp_path, where):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" if where == "file" else tmp_path / "a_file" / "plots"
    r = run_solver(["plot", run_dir, "--out", str(out)])
    assert r.returncode == 2
    _one_error_line(r, str(out), "--out")
    assert (tmp_path / "a_file").read_text() == "x"


def test_plot_out_in_a_read_only_place_is_one_line(run_dir, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    os.chmod(out, 0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("this user can write to a read-only directory (root)")
        r = run_solver(["plot", run_dir, "--out", str(out)])
        assert r.returncode == 2
        _one_error_line(r, str(out), "--out")
        assert os.listdir(out) == []
    finally:
        os.chmod(out, 0o755)


def test_plot_out_under_proc_is_one_line(run_dir):
    r = run_solver(["plot", run_dir, "--out", "/proc/solver-plots"])
    assert r.returncode in (1, 2)
    _one_error_line(r, "/proc/solver-plots")


def test_plot_of_a_fifo_history_does_not_hang(run_dir, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(os.path.join(run_dir, "checkpoints"), run / "checkpoints")
    os.mkfifo(run / "diagnostics.csv")
    r = run_solver(["plot", str(run), "--out", str(tmp_path / "plots")], timeout=90)
    assert r.returncode == 2
    _one_error_line(r, "diagnostics", "is a FIFO")
    assert not (tmp_path / "plots").exists()


def test_bench_never_replaces_a_users_results(tmp_path):
    (tmp_path / "compute.json").write_text('{"mine": true}')
    r = run_solver(["bench", "--quick", "--repeats", "1", "--seconds", "0.05", "--backends", "numpy",
                    "--dir", str(tmp_path)], timeout=110)
    assert r.returncode == 2
    _one_error_line(r, str(tmp_path / "compute.json"), "another bench --dir")
    assert (tmp_path / "compute.json").read_text() == '{"mine": true}'
    assert os.listdir(tmp_path) == ["compute.json"]


def test_results_list_records_what_was_written(tmp_path):
    write_results(str(tmp_path), {"a.json": b"1"}, "--dir")
    write_results(str(tmp_path), {"a.json": b"2", "b.json": b"3"}, "--dir")
    assert (tmp_path / "a.json").read_bytes() == b"2"
    assert set(json.loads((tmp_path / LIST).read_text())["files"]) == {"a.json", "b.json"}
    (tmp_path / "b.json").write_bytes(b"edited by the user")
    with pytest.raises(ConfigError, match="b.json exists and was not written by solver"):
        write_results(str(tmp_path), {"a.json": b"4", "b.json": b"5"}, "--dir")
    assert (tmp_path / "a.json").read_bytes() == b"2"           # nothing written
    check_replaceable(str(tmp_path), ["a.json", "c.json"], "--dir")
