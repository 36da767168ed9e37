"""matplotlib without pyplot: a figure on its own Agg canvas, saved as PNG, SVG or inline SVG.

pyplot's global state and the session's backend are never touched. matplotlib is
imported on first use; without it a clear ``ImportError`` names the extra.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._analysis.report import VarianceReport
from .._analysis.tree import DivergenceTree
from .._errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["BLUE", "GREEN", "GREY", "INK", "INSTALL_HINT", "RED", "axes_for", "figure_of",
           "finish", "new_figure", "note", "save", "style", "svg", "unit"]

INSTALL_HINT = "plots need matplotlib: pip install matplotlib"

BLUE, RED, GREEN, GREY, INK = "#2a6f97", "#c8553d", "#6a994e", "#9aa5b1", "#1f2933"
_FORMATS = {".png": "png", ".svg": "svg"}


def new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


@contextlib.contextmanager
def _quiet_glyphs() -> Iterator[None]:
    # Server text may hold characters the bundled font lacks; a box is drawn for them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        yield


def save(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``figure`` as PNG or SVG, chosen by the suffix of ``path``."""
    target = Path(path)
    kind = _FORMATS.get(target.suffix.lower())
    if kind is None:
        raise ConfigError("path", f"{target.name}: the suffix must be .png or .svg")
    metadata = {"Date": None} if kind == "svg" else {"Software": None}
    with _quiet_glyphs():
        try:
            figure.savefig(target, format=kind, dpi=144, metadata=metadata)
        except OSError as exc:
            raise ConfigError("path", f"cannot write {target}: {exc.strerror}") from None


def svg(figure: Figure, salt: str) -> str:
    """``figure`` as an inline ``<svg>`` element; ``salt`` keeps its ids unique in a page."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with _quiet_glyphs(), rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def finish(figure: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save(figure, path)
    return figure


def axes_for(ax: Axes | None, width: float, height: float) -> Axes:
    if ax is not None:
        return ax
    return new_figure(width, height).add_subplot()


def figure_of(ax: Axes) -> Figure:
    figure = ax.get_figure(root=True)
    assert figure is not None
    return figure


def style(ax: Axes, title: str) -> None:
    ax.set_title(title, loc="left", fontsize=11, color=INK)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8, colors=INK)


def note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color=GREY, parse_math=False)
    ax.set_xticks([])
    ax.set_yticks([])


def unit(report: VarianceReport | DivergenceTree) -> str:
    return "provider tokens" if report.tokenization == "provider" else "words"
