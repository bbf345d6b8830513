"""Pictures fit for a paper, read back from the figures themselves: text
inside the canvas, one colour norm across a series, a diverging map
centred on 0 only for a field that changes sign, tick labels apart, every
body visible, 3-D planes through the centre, the figure eight's tracks."""
import os

import h5py
import numpy as np
import pytest

from conftest import run_solver

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.timeout(300)

LONG = "a_run_whose_name_is_much_longer_than_any_figure_is_wide-" * 3


def _run(base, name, *sets):
    run = str(base / name)
    args = ["run", "--output", run]
    for s in sets:
        args += ["--set", s]
    r = run_solver(args)
    assert r.returncode == 0, r.stderr
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pictures")
    every = ["output.keep=0", "output.checkpoint_every=10", "output.snapshot_every=10"]
    return {
        "signed": _run(base, "signed", "heat.shape=[16,12]", "heat.modes=[1,2]", "time.steps=40", *every),
        "positive": _run(base, "positive", "heat.shape=[16,12]", "heat.modes=[1,1]", "time.steps=40", *every),
        "3d": _run(base, "box", "heat.shape=[7,6,4]", "heat.extent=[3.0,2.0,1.0]", "heat.initial='random'",
                   "time.steps=6", "output.keep=0", "output.checkpoint_every=2", "output.snapshot_every=2"),
        "figure8": _run(base, "figure8", "problem.kind='nbody'", "nbody.initial='figure8'", "nbody.softening=0.0",
                        "time.dt=0.005", "time.t_end=6.32591398", "output.keep=0", "output.checkpoint_every=0",
                        "output.snapshot_every=25"),
        "plummer": _run(base, "plummer", "problem.kind='nbody'", "nbody.n=400", "time.dt=0.01", "time.steps=4",
                        "output.keep=0", "output.snapshot_every=2"),
    }


def _paths(run):
    from solver.io.series import frames
    return [path for _, path in frames(run)[1]]


def _view(run, look=None):
    from solver.io.figures import Look
    from solver.models import get
    paths = _paths(run)
    with h5py.File(paths[-1], "r") as f:
        problem = f.attrs["problem"]
    return get(problem).View(paths, look or Look()), paths


def _drawn(run, look=None):
    """Every figure plot draws of ``run``, finished as it is before saving."""
    from solver.io.figures import finish
    view, paths = _view(run, look)
    figures = []
    for path in sorted(set(paths[::max(1, len(paths) // 3)] + paths[-1:])):
        fig = view.new_figure()
        view.draw(fig, path)
        figures.append(fig)
    if hasattr(view, "draw_tracks"):
        figures.append(view.draw_tracks()[1])
    for fig in figures:
        finish(fig)
    return figures


def _texts_outside(fig):
    """The texts the figure draws (titles, labels, tick labels in view) that
    reach past its canvas."""
    from matplotlib.text import Text
    from solver.io.figures import shown_ticklabels
    fig.canvas.draw()
    axes = [axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)]
    ticks = {id(label) for axis in axes for t in axis.get_major_ticks() + axis.get_minor_ticks()
             for label in (t.label1, t.label2)}
    texts = [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible() and t.get_text().strip()]
    texts += [t for axis in axes for minor in (False, True) for t in shown_ticklabels(axis, minor)]
    assert texts
    box = fig.bbox
    return [t.get_text() for t in texts
            if not (box.x0 - 0.5 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= box.x1 + 0.5
                    and box.y0 - 0.5 <= t.get_window_extent().y0 and t.get_window_extent().y1 <= box.y1 + 0.5)]


@pytest.mark.parametrize("kind", ["signed", "3d", "figure8", "plummer"])
def test_every_text_lies_inside_the_canvas(runs, kind, tmp_path):
    os.symlink(runs[kind], tmp_path / LONG)         # the run under a long name
    run = str(tmp_path / LONG)
    for fig in _drawn(run):
        assert _texts_outside(fig) == []
        assert LONG[:20] in fig._suptitle.get_text()


@pytest.mark.parametrize("kind", ["signed", "3d", "figure8", "plummer"])
def test_no_two_titles_or_labels_overlap_and_titles_keep_over_their_panels(runs, kind, tmp_path):
    from matplotlib.text import Text
    os.symlink(runs[kind], tmp_path / LONG)
    for fig in _drawn(str(tmp_path / LONG)):
        fig.canvas.draw()
        ticks = {id(label) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                 for t in axis.get_major_ticks() + axis.get_minor_ticks() for label in (t.label1, t.label2)}
        boxes = [(t.get_text(), t.get_window_extent()) for t in fig.findobj(Text)
                 if id(t) not in ticks and t.get_visible() and t.get_text().strip()]
        for k, (a, box) in enumerate(boxes):
            for b, other in boxes[k + 1:]:
                assert not box.overlaps(other), (a, b)
        for ax in fig.axes:                       # a panel's title stays over its panel
            if ax.get_title():
                title, panel = ax.title.get_window_extent(), ax.get_window_extent()
                assert panel.x0 - 6.5 <= title.x0 and title.x1 <= panel.x1 + 6.5, ax.get_title()


def test_the_history_title_lies_inside_the_canvas(runs, tmp_path):
    from solver.io.figures import finish, history_figure
    from solver.models import get
    os.symlink(runs["signed"], tmp_path / LONG)
    run = str(tmp_path / LONG)
    fig = history_figure(os.path.join(run, "diagnostics.csv"),
                         lambda cols: get("heat").history_panels(cols, _paths(run)[-1]))
    finish(fig)
    assert _texts_outside(fig) == []


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def test_one_colour_norm_across_a_series_the_series_range(runs):
    run = runs["positive"]
    lo = min(float(h5py.File(p, "r")["heat/u"][...].min()) for p in _paths(run))
    hi = max(float(h5py.File(p, "r")["heat/u"][...].max()) for p in _paths(run))
    norms = {(im.norm.vmin, im.norm.vmax) for fig in _drawn(run) for im in _images(fig)}
    assert len(norms) == 1 and norms.pop() == (pytest.approx(lo), pytest.approx(hi))
    assert len(_paths(run)) == 5 and hi > 1.5 * float(h5py.File(_paths(run)[-1], "r")["heat/u"][...].max())


def test_a_field_that_changes_sign_gets_a_diverging_map_centred_on_zero(runs):
    for fig in _drawn(runs["signed"]):
        for im in _images(fig):
            assert im.get_cmap().name == "RdBu_r"
            assert im.norm.vmin == -im.norm.vmax and im.norm(0.0) == pytest.approx(0.5)


def test_a_field_of_one_sign_gets_a_sequential_map(runs):
    for fig in _drawn(runs["positive"]):
        assert {im.get_cmap().name for im in _images(fig)} == {"inferno"}


def test_vmin_vmax_and_cmap_are_the_users(runs):
    from solver.io.figures import Look
    for fig in _drawn(runs["signed"], Look(cmap="viridis", vmin=-0.2, vmax=0.6)):
        for im in _images(fig):
            assert im.get_cmap().name == "viridis"
            assert (im.norm.vmin, im.norm.vmax) == (-0.2, 0.6) and im.norm(0.0) == pytest.approx(0.5)


def test_no_tick_labels_overlap(runs):
    from solver.io.figures import crowded, shown_ticklabels
    for kind in ("signed", "3d", "figure8", "plummer"):
        for fig in _drawn(runs[kind]):
            for ax in fig.axes:
                assert not crowded(shown_ticklabels(ax.xaxis)) and not crowded(shown_ticklabels(ax.yaxis)), kind


def test_crowded_tick_labels_are_thinned():
    from solver.io.figures import crowded, figure, finish, shown_ticklabels
    fig = figure(2.5, 2.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([1000000.5, 1000003.5], [0, 1])
    ax.set_xticks(np.linspace(1000000.5, 1000003.5, 12))
    ax.ticklabel_format(useOffset=False)
    fig.canvas.draw()
    assert crowded(shown_ticklabels(ax.xaxis))
    finish(fig)
    assert not crowded(shown_ticklabels(ax.xaxis)) and shown_ticklabels(ax.xaxis)


def test_3d_planes_go_through_the_centre_never_a_wall(runs):
    from solver.models.heat.pictures import Grid, planes
    view, paths = _view(runs["3d"])
    assert view.planes == [(0, 3), (1, 3), (2, 2)]            # shape 7, 6, 4: the middle cells
    grid = Grid(paths[-1])
    for axis, index in view.planes:
        assert 0 < index < grid.shape[axis] - 1
        assert grid.low(axis) < grid.centre(axis, index) < grid.high(axis)
    assert planes(grid, [(2, 0.1), (0, 2.9)]) == [(2, 0), (0, 6)]


def test_marker_sizes_grow_with_mass_within_bounds():
    from solver.io.figures import marker_sizes
    mass = np.array([1.0, 1e-9, 0.0, 1e-3, 0.5])
    s = marker_sizes(mass, 4.0, 100.0)
    assert s.min() >= 4.0 and s.max() == pytest.approx(100.0)
    assert s[1] == s[2] == 4.0 and s[1] < s[3] < s[4] < s[0]
    assert len(set(marker_sizes(np.ones(5)))) == 1


def test_every_body_is_drawn_visible_whatever_its_mass(tmp_path):
    run = tmp_path / "light"
    (run / "checkpoints").mkdir(parents=True)
    with h5py.File(run / "checkpoints" / "step_000000001.h5", "w") as f:
        f.attrs.update({"step": 1, "time": 0.1, "problem": "nbody"})
        f["nbody/position"] = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        f["nbody/mass"] = np.array([1.0, 1e-12, 0.0])
        f["nbody/id"] = np.arange(3)
    fig = _drawn(str(run))[0]
    sizes = [c.get_sizes() for ax in fig.axes for c in ax.collections]
    assert len(sizes) == 1 and len(sizes[0]) == 3 and sizes[0].min() >= 10


def test_a_dense_core_is_shaded_not_a_blob(runs):
    fig = _drawn(runs["plummer"])[0]
    from matplotlib.collections import PathCollection
    dots = [c for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 2                                     # all bodies, and the centre
    for c in dots:
        assert c.get_alpha() < 1 and len(np.unique(c.get_array())) > 3


def test_figure8_tracks_draw_the_figure_eight(runs):
    view, paths = _view(runs["figure8"])
    assert len(paths) > 40
    stem, fig = view.draw_tracks()
    lines = [line.get_xydata() for ax in fig.axes for line in ax.get_lines()]
    assert stem == "tracks" and len(lines) == 3
    for xy in lines:                       # each body runs through both lobes and the crossing
        assert xy[:, 0].min() < -1.0 and xy[:, 0].max() > 1.0
        assert (xy[:, 1] > 0.3).any() and (xy[:, 1] < -0.3).any()
        assert np.hypot(*xy.T).min() < 0.1


# --- the command ------------------------------------------------------------------------
def _listing(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else None


def test_format_and_dpi(runs, tmp_path):
    run = runs["positive"]
    for fmt, magic in (("pdf", b"%PDF"), ("svg", b"<?xml")):
        r = run_solver(["plot", run, "--format", fmt, "--out", str(tmp_path / fmt)])
        assert r.returncode == 0, r.stderr
        assert _listing(tmp_path / fmt) == [".solver-written", f"field_000000040.{fmt}", f"history.{fmt}"]
        assert (tmp_path / fmt / f"field_000000040.{fmt}").read_bytes().startswith(magic)
    from PIL import Image
    sizes = {}
    for dpi in (50, 100):
        r = run_solver(["plot", run, "--dpi", str(dpi), "--out", str(tmp_path / str(dpi))])
        assert r.returncode == 0, r.stderr
        sizes[dpi] = Image.open(tmp_path / str(dpi) / "field_000000040.png").size
    assert abs(2 * sizes[50][0] - sizes[100][0]) <= 2


def test_all_step_slice_cmap_vmin_vmax(runs, tmp_path):
    r = run_solver(["plot", runs["positive"], "--all", "--out", str(tmp_path / "all")])
    assert r.returncode == 0, r.stderr
    assert [n for n in _listing(tmp_path / "all") if n.startswith("field")] == \
        [f"field_{s:09d}.png" for s in (0, 10, 20, 30, 40)]
    r = run_solver(["plot", runs["positive"], "--step", "20", "--out", str(tmp_path / "one")])
    assert r.returncode == 0, r.stderr
    assert "field_000000020.png" in _listing(tmp_path / "one")
    r = run_solver(["plot", runs["3d"], "--slice", "x2=0.25", "--slice", "x0=1.5", "--cmap", "viridis",
                    "--vmin", "0", "--vmax", "1", "--out", str(tmp_path / "slice")])
    assert r.returncode == 0, r.stderr
    assert "field_000000006.png" in _listing(tmp_path / "slice")


def test_nbody_plot_draws_particles_and_tracks(runs, tmp_path):
    r = run_solver(["plot", runs["figure8"], "--out", str(tmp_path / "p")])
    assert r.returncode == 0, r.stderr
    last = os.path.basename(_paths(runs["figure8"])[-1]).replace("step", "particles").replace(".h5", ".png")
    assert last == "particles_000001266.png"                  # the final checkpoint, off the snapshot cadence
    assert [n for n in _listing(tmp_path / "p") if not n.startswith(".")] == ["history.png", last, "tracks.png"]


def _frames_of_gif(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.n_frames


@pytest.mark.parametrize("kind", ["figure8", "3d"])
def test_movie_gif(runs, kind, tmp_path):
    movie = tmp_path / "movies" / "m.gif"
    r = run_solver(["plot", runs[kind], "--movie", str(movie)])
    assert r.returncode == 0, r.stderr
    assert _frames_of_gif(movie) == len(_paths(runs[kind]))
    r = run_solver(["plot", runs[kind], "--movie", str(movie)])       # its own movie: replaced
    assert r.returncode == 0, r.stderr


def test_movie_mp4_with_ffmpeg(runs, tmp_path):
    from matplotlib import animation
    if not animation.writers.is_available("ffmpeg"):
        pytest.skip("no ffmpeg on PATH")
    movie = tmp_path / "m.mp4"
    r = run_solver(["plot", runs["figure8"], "--movie", str(movie)])
    assert r.returncode == 0, r.stderr
    assert movie.read_bytes()[4:8] == b"ftyp"


def test_movie_never_replaces_a_users_file(runs, tmp_path):
    movie = tmp_path / "mine.gif"
    movie.write_bytes(b"the user's own movie")
    r = run_solver(["plot", runs["3d"], "--movie", str(movie)])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "solver: error:" in r.stderr
    assert movie.read_bytes() == b"the user's own movie" and _listing(tmp_path) == ["mine.gif"]


BAD = [
    ("positive", ["--format", "jpg"], "--format"),
    ("positive", ["--dpi", "0"], "--dpi"),
    ("positive", ["--cmap", "viridiss"], "did you mean 'viridis'"),
    ("positive", ["--vmin", "2", "--vmax", "1"], "--vmin"),
    ("positive", ["--vmin", "nan"], "--vmin"),
    ("positive", ["--vmin", "5"], "--vmin"),
    ("positive", ["--slice", "x0=0.5"], "3-D"),
    ("3d", ["--slice", "x3=0.5"], "AXIS=COORD"),
    ("3d", ["--slice", "x0"], "AXIS=COORD"),
    ("3d", ["--slice", "x0=3.5"], "outside the domain"),
    ("positive", ["--step", "7"], "have 0, 10, 20, 30, 40"),
    ("positive", ["--step", "10", "--all"], "not both"),
    ("positive", ["--movie", "m.avi"], ".mp4 or .gif"),
    ("positive", ["--movie", "m.gif", "--all"], "--movie"),
]


@pytest.mark.parametrize("kind,args,says", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_bad_options_are_one_line_exit_2_and_write_nothing(runs, kind, args, says, tmp_path):
    run = runs[kind]
    before = _listing(os.path.join(run, "plots"))
    args = [a.replace("m.", str(tmp_path / "m.")) for a in args]
    r = run_solver(["plot", run, *args])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("solver: error:") and says in r.stderr, r.stderr
    assert _listing(os.path.join(run, "plots")) == before and _listing(tmp_path) == []


def test_an_mp4_without_ffmpeg_is_one_line(runs, tmp_path):
    from matplotlib import animation
    if animation.writers.is_available("ffmpeg"):
        pytest.skip("ffmpeg is on PATH")
    r = run_solver(["plot", runs["figure8"], "--movie", str(tmp_path / "m.mp4")])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs ffmpeg" in r.stderr
    assert _listing(tmp_path) == []


def test_a_movie_of_one_frame_is_refused(tmp_path):
    run = _run(tmp_path, "single", "heat.shape=[8,8]", "time.steps=2", "output.snapshot_every=0")
    r = run_solver(["plot", run, "--movie", str(tmp_path / "m.gif")])
    assert r.returncode == 2 and "needs a series" in r.stderr and not (tmp_path / "m.gif").exists()


# --- snapshots before checkpoints ---------------------------------------------------------
def _snapshot(run, step, t, u):
    os.makedirs(os.path.join(run, "snapshots"), exist_ok=True)
    with h5py.File(os.path.join(run, "snapshots", f"snap_{step:09d}.h5"), "w") as f:
        f.attrs.update({"step": step, "time": t, "problem": "heat"})
        f["heat/u"] = u.astype(np.float32)
        f["heat/u"].attrs.update({"origin": [0.05, 0.05], "spacing": [0.1, 0.1]})


def test_the_series_is_the_snapshots_and_the_checkpoints_off_their_steps(runs, tmp_path):
    import shutil
    run = str(tmp_path / "mixed")
    shutil.copytree(os.path.join(runs["positive"], "checkpoints"), os.path.join(run, "checkpoints"))
    for k in range(3):
        _snapshot(run, 5 * k, 0.1 * k, np.full((16, 12), 3.0 - k))
    from solver.io.series import frames
    kind, series = frames(run)
    assert kind == "snapshots and checkpoints" and [s for s, _ in series] == [0, 5, 10, 20, 30, 40]
    assert "snapshots" in series[2][1] and "checkpoints" in series[3][1]
    r = run_solver(["plot", run, "--all", "--out", str(tmp_path / "p")])
    assert r.returncode == 0, r.stderr
    assert [n for n in _listing(tmp_path / "p") if n.startswith("field")] == \
        [f"field_{s:09d}.png" for s in (0, 5, 10, 20, 30, 40)]
    view, _ = _view(run)
    assert view.range == (pytest.approx(float(np.min([h5py.File(p, "r")["heat/u"][...].min() for p in _paths(run)]))),
                          3.0)


def test_tracks_need_three_frames(runs, tmp_path):
    import shutil
    run = str(tmp_path / "two")
    os.makedirs(os.path.join(run, "checkpoints"))
    for path in _paths(runs["figure8"])[-2:]:
        shutil.copy(path, os.path.join(run, "checkpoints", "step_" + os.path.basename(path)[-12:]))
    r = run_solver(["plot", run, "--out", str(tmp_path / "p")])
    assert r.returncode == 0, r.stderr
    assert "tracks.png" not in _listing(tmp_path / "p")
