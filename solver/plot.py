"""``python -m solver plot RUN_DIR``: PNG images of a run, the field of a
checkpoint (the model's picture) and the diagnostics history."""
from __future__ import annotations

import os

from .config import ConfigError
from .io.figures import render_history
from .io.inputs import check_file
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
    out_dir = out_dir or os.path.join(run_dir, "plots")
    try:
        written = [spec.picture(path, out_dir)]
        history = render_history(os.path.join(run_dir, "diagnostics.csv"), out_dir,
                                 lambda cols: spec.history_panels(cols, path))
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    return written + ([history] if history else [])
