"""Writing figures: the one `save_figure` of the package (matplotlib, Agg canvas).

`keras_residual.viz.plots`, `keras_residual.lesion.plots` and
`keras_residual.experiments.plots` build `matplotlib.figure.Figure` objects
without pyplot; this writes any of them.
"""

from __future__ import annotations

import os
from typing import Any

#: Resolution of every figure the package writes.
DPI = 110


def save_figure(fig: Any, path: str, dpi: int = DPI) -> str:
    """Write `fig` to `path` as PNG, creating the folder, cropped to what is drawn; return `path`.

    Args:
        fig: matplotlib.figure.Figure.
        path: str. Where to write; the extension picks the format (PNG for ".png").
        dpi: int. Dots per inch. Defaults to `DPI` (110).

    Returns:
        `path`.

    Example:
        >>> import os, tempfile
        >>> from matplotlib.figure import Figure
        >>> fig = Figure(figsize=(1, 1))
        >>> _ = fig.add_subplot().plot([0, 1])
        >>> os.path.exists(save_figure(fig, os.path.join(tempfile.mkdtemp(), "sub", "a.png")))
        True
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
