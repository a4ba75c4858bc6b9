"""``--plot FILE``: precision-recall and Recall@K curves of every method, as a PNG.

matplotlib is an optional dependency (the ``eval`` extra), imported only here and only
when a plot is asked for; it renders with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path

from spyglass.errors import InvalidQuery, MissingDependency
from spyglass.eval.metrics import RECALL_LEVELS
from spyglass.eval.report import title
from spyglass.eval.results import ProtocolResult


def save_plot(result: ProtocolResult, path: str | Path) -> Path:
    """Draw the interpolated precision-recall curve (left) and Recall@K against K on a
    log scale (right), one line per method; returns the file written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as error:
        raise MissingDependency("--plot needs matplotlib: pip install 'spyglass[eval]'") from error
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise InvalidQuery(f"--plot writes a PNG: give a file name ending in .png, not {path}")
    if not target.parent.is_dir():
        raise InvalidQuery(f"cannot write {path}: folder {target.parent} does not exist")
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4.5))
    try:
        for method in result.methods:
            if any(math.isnan(v) for v in method.pr_curve):
                continue
            label = f"{method.method} (mAP {method.metrics['mAP']:.3f})"
            left.plot(RECALL_LEVELS, method.pr_curve, marker="o", markersize=3, label=label)
            right.plot(method.curve_ks, method.recall_curve, marker="o", markersize=3, label=label)
        left.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02))
        left.set_title("precision-recall")
        right.set(xlabel="K", ylabel="recall@K", ylim=(0, 1.02), xscale="log")
        right.set_title("Recall@K")
        for axes in (left, right):
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize="small")
        figure.suptitle(title(result), fontsize="medium")
        figure.tight_layout()
        figure.savefig(target, dpi=110)
    except OSError as error:
        raise InvalidQuery(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        pyplot.close(figure)
    return target
