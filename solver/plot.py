"""``python -m solver plot RUN_DIR``: PNG images of a run, the field of a
checkpoint (the model's picture) and the diagnostics history.

The images are drawn in a private temporary directory, then written into
the output directory (default RUN_DIR/plots) by ``io.owned``: an image
replaces only one that this command wrote, never a user's file."""
from __future__ import annotations

import os
import tempfile

from .config import ConfigError
from .io.figures import render_history
from .io.inputs import check_file
from .io.owned import write_results
from .io.rotation import list_checkpoints
from .models import get


def plot_run(run_dir, step=None, out_dir=None) -> list[str]:
    found = dict(list_checkpoints(os.path.join(run_dir, "checkpoints")))
    if not found:
        raise ConfigError(f"plot: no checkpoints in {run_dir}/checkpoints")
    if step is None:
        step = max(found)
    if step not in found:
        raise ConfigError(f"plot: no checkpoint of step {step} in {run_dir}; have {sorted(found)}")
    path = found[step]
    info = check_file(path, "plot")
    spec = get(info.attrs["problem"])
    with tempfile.TemporaryDirectory(prefix="solver-plot-") as drawn:
        try:
            images = [spec.picture(path, drawn)]
            history = render_history(os.path.join(run_dir, "diagnostics.csv"), drawn,
                                     lambda cols: spec.history_panels(cols, path))
        except ImportError as exc:
            raise ConfigError(str(exc)) from None
        images += [history] if history else []
        files = {}
        for image in images:
            with open(image, "rb") as fh:
                files[os.path.basename(image)] = fh.read()
    return write_results(out_dir or os.path.join(run_dir, "plots"), files, "plot --out")
