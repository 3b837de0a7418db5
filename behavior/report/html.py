"""Self-contained HTML pages: every image inline as a data URI, the style in the page, no script, no network.

The run report, the bench report and ``behavior.compare`` build their pages from these pieces, so a page opens
from disk, by mail or from an archive years later exactly as it was written.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from behavior.atomic import atomic_open

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 24px 48px; color: #1d2430; background: #fff; }
h1 { font-size: 22px; margin: 24px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px;
     border-bottom: 1px solid #d8dde6; padding-bottom: 4px; }
.sub { color: #5a6478; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d8dde6; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f8; } td.n { text-align: right; }
tr.bad td { background: #fff3f0; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 8px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { border: 1px solid #d8dde6; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 22px; } .card span { color: #5a6478; font-size: 12px; }
.clips { display: flex; flex-wrap: wrap; gap: 14px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #3a4458; max-width: 420px; overflow-wrap: anywhere; }
img { image-rendering: auto; max-width: 100%; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
details summary { cursor: pointer; color: #2a5db0; }
"""


class Markup(str):
    """HTML this module's callers built themselves (a link, bold text): table cells take it as it is."""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """A matplotlib Figure as PNG bytes (the Figure needs a canvas: behavior.report.inspect.new_figure)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def animated_gif(frames: np.ndarray, fps: float = 4.0) -> bytes:
    """uint8 frames [T, H, W, 3] as a looping GIF: every browser plays it, and it needs no script."""
    from PIL import Image  # matplotlib's own dependency

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in np.asarray(frames, dtype=np.uint8)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 / fps)), optimize=True)
    return buf.getvalue()


def image(data: bytes, alt: str, mime: str = "image/png", box: str = "", width: int | None = None) -> str:
    """An inline image; ``box`` names it (data-box) so a page test can find it."""
    size = f' width="{width}"' if width else ""
    tag = f' data-box="{escape(box)}"' if box else ""
    return f'<img src="{data_uri(data, mime)}" alt="{escape(alt)}"{size}{tag}>'


def cell(value: object, strong: bool = False) -> str:
    """One <td>: numbers right-aligned (floats to 4 decimals); ``strong`` sets the value in bold; Markup as it is."""
    css, text = "", escape(value)
    if isinstance(value, Markup):
        text = str(value)
    if isinstance(value, bool) or value is None:
        text = "" if value is None else text
    elif isinstance(value, int | np.integer):
        css, text = ' class="n"', str(int(value))
    elif isinstance(value, float | np.floating):
        css, text = ' class="n"', "" if math.isnan(float(value)) else f"{float(value):.4f}"
    return f"<td{css}>{f'<b>{text}</b>' if strong and text else text}</td>"


def table(rows: Sequence[Mapping], columns: Sequence[str] | None = None,
          bad: Sequence[bool] | None = None, headers: Mapping[str, str] | None = None,
          strong: Sequence[Collection[str]] | None = None) -> str:
    """Rows of dicts as a table (floats to 4 decimals); ``bad`` marks rows to tint (e.g. wrong predictions),
    ``strong`` names per row the keys whose cells are set in bold (e.g. the best value of a row)."""
    rows = list(rows)
    if not rows:
        return '<p class="sub">(no rows)</p>'
    keys = list(columns) if columns is not None else list(rows[0])
    names = headers or {}
    head = "".join(f"<th>{escape(names.get(k, k))}</th>" for k in keys)
    body = []
    for i, row in enumerate(rows):
        css = ' class="bad"' if bad is not None and bad[i] else ""
        bold = strong[i] if strong is not None else ()
        body.append(f"<tr{css}>{''.join(cell(row.get(k), k in bold) for k in keys)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(values: Sequence[tuple[str, str]]) -> str:
    """Headline figures as cards: (label, value) pairs."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in values) + "</div>"


def side_by_side(*parts: str) -> str:
    """Parts next to each other while the window is wide enough, under each other when it is not."""
    return '<div class="row">' + "".join(f"<div>{part}</div>" for part in parts) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole page: a title, a line under it, and (heading, inner HTML) sections in order."""
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="sub">{escape(subtitle)}</p>']
    parts += [(f"<h2>{escape(heading)}</h2>" if heading else "") + body for heading, body in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_page(path: str | os.PathLike, text: str) -> Path:
    """Write a page atomically: a reader (or a browser) sees the old page or the new one, never half of one."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)
