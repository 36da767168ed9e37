"""How a result shows itself in a notebook: a one-line ``repr`` and a short ``_repr_html_``.

A result holding 10,000 samples must not print 400,000 characters when a notebook cell
ends with it: ``Displayed`` gives every result class one line (``<SampleSet ... n=30
distinct=3 D=0.29>``, from the class's ``_summary()``) and an HTML view built from the
HTML report's parts (``_render.notebook``, imported when first shown), bounded in size.
A new result class gets both by inheriting ``Displayed`` first and writing ``_summary``.
"""

from __future__ import annotations

__all__ = ["Displayed", "fmt"]


def fmt(value: float | None, spec: str = ".3g") -> str:
    """A number for a one-line summary; ``n/a`` for None."""
    return "n/a" if value is None else format(value, spec)


class Displayed:
    """Mixin: ``repr`` is ``<ClassName summary>`` on one line; ``_repr_html_`` is the
    notebook view."""

    __slots__ = ()

    def _summary(self) -> str:
        """The facts that fit one line: counts and the headline figure."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {' '.join(self._summary().split())}>"

    def _repr_html_(self) -> str:
        from .._render.notebook import html_view

        return html_view(self)
