"""matplotlib, imported only when drawing (the `plot` extra), and a figure turned into PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..errors import CutoutEtlError

DPI = 100


class PlotUnavailableError(CutoutEtlError):
    """matplotlib (the `plot` extra) is not installed."""


def matplotlib_figure() -> Any:
    """matplotlib's Figure class (object API and the Agg canvas: no pyplot, no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError(
            "drawing needs matplotlib, which is not installed: pip install 'cutout-etl[plot]'"
        ) from None
    return Figure


def figure_rgb(fig: Any) -> np.ndarray:
    """The figure drawn by Agg, (height, width, 3) uint8, a writable copy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(np.asarray(canvas.buffer_rgba())[..., :3])


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB PNG (no alpha channel: ~10% smaller), no metadata: the same pixels give the same bytes."""
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def figure_png(fig: Any) -> bytes:
    return encode_png(figure_rgb(fig))
