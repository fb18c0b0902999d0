"""report.html: one self-contained page that opens offline (plotly.js inlined once, no CDN)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Iterable

import plotly.io as pio

from .data import Table

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { margin: 1.6rem 0 .3rem; font-size: 1.1rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: .4rem .8rem; margin: .4rem 0; }
.caption { color: #555; font-size: .9rem; margin: .2rem 0 .8rem; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; font-size: .92rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
"""


@dataclass
class Panel:
    """One block of the page: a figure, or the note saying why it is missing."""

    name: str                  # the figure's file stem (report_png/NAME.png) and part of its div id
    title: str
    figure: Any = None         # a plotly Figure, or None when it could not be drawn
    note: str | None = None    # why it is missing, or what to read it with
    caption: str | None = None


class FigureHtml:
    """Figure divs for one page: the first carries plotly.js inline, the others reuse it."""

    def __init__(self) -> None:
        self._inlined = False

    def __call__(self, figure, div_id: str) -> str:
        snippet = pio.to_html(figure, full_html=False, include_plotlyjs=not self._inlined, div_id=div_id,
                              config={"displaylogo": False, "responsive": True})
        self._inlined = True
        return snippet


def document(title: str, body: Iterable[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def panel(p: Panel, figures: FigureHtml, prefix: str) -> str:
    parts = [f"<h3>{esc(p.title)}</h3>"]
    if p.figure is not None:
        parts.append(figures(p.figure, f"fig-{prefix}-{p.name}"))
    if p.note:
        parts.append(note(p.note))
    if p.caption:
        parts.append(f'<p class="caption">{esc(p.caption)}</p>')
    return "\n".join(parts)


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def facts(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(cell(v))}</dd>" for k, v in items)
    return f'<dl class="facts">{rows}</dl>'


def table(t: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"<td{'' if numeric else ' class=text'}>{esc(cell(value))}</td>"


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)
