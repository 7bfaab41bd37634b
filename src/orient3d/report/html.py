"""Small HTML helpers: escaped text, tables, figures as data URIs, the page shell.

Everything is self-contained: inline CSS, images as ``data:`` URIs, and one
optional inline script that records, on load, whether every image decoded
(``<html data-images="ok N">`` or ``"broken K"``); the page needs no script.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orient3d.metrics.stats import format_ci

__all__ = ["cell", "figure", "page", "paragraphs", "table"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
.tw { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .8em 0; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 85%; color: #555; }
.answer { background: #f4f8ec; border-left: 4px solid #7a3; padding: .4em .8em; margin: .5em 0; }
.question { font-weight: 600; margin-top: .8em; }
.note { color: #666; font-size: 90%; }
.missing { color: #a33; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 85%; }
code { font-size: 90%; }
"""

IMAGE_CHECK = """
window.addEventListener("load", function () {
  var imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { bad++; }
  }
  document.documentElement.setAttribute(
    "data-images", bad ? "broken " + bad : "ok " + imgs.length);
});
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def cell(value: Any) -> tuple[str, bool]:
    """``(html, is_number)`` of one table value.

    Numbers get 4 significant digits; ``{"mean", "lo", "hi"}`` renders as
    ``mean [lo, hi]``; ``None`` as a dash; lists of numbers joined by commas.
    """
    if value is None:
        return "–", False
    if isinstance(value, bool):
        return esc(value), False
    if isinstance(value, int):
        return esc(value), True
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else esc(f"{value:.4g}")), True
    if isinstance(value, dict) and "mean" in value:
        if value["mean"] is None:
            return "–", False
        nan = float("nan")
        lo, hi = value.get("lo", nan), value.get("hi", nan)
        text = format_ci(
            float(value["mean"]),
            float(lo if lo is not None else nan),
            float(hi if hi is not None else nan),
        )
        if "n" in value:
            text += f" (n={value['n']})"
        return esc(text), True
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return esc(", ".join(cell(v)[0] for v in value)), False
    return esc(value), False


def table(columns: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells formatted by :func:`cell`."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        tds = []
        for v in row:
            text, num = cell(v)
            tds.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="tw"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure(png: bytes | Path, caption: str = "", alt: str = "") -> str:
    """An ``<img>`` embedding PNG bytes (or a PNG file) as a data URI; a note if unreadable."""
    if isinstance(png, Path):
        try:
            png = png.read_bytes()
        except OSError:
            return f'<p class="missing">figure not found: {esc(png)}</p>'
    if not png.startswith(b"\x89PNG"):
        return f'<p class="missing">not a PNG image: {esc(caption or alt)}</p>'
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt or caption)}">{cap}</figure>'


def paragraphs(text: str) -> str:
    """Escaped text; blank lines separate paragraphs."""
    parts = [p.strip() for p in str(text).split("\n\n") if p.strip()]
    return "".join(f"<p>{esc(p)}</p>" for p in parts)


def page(title: str, body: str) -> str:
    """The whole self-contained HTML document."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n"
        f"<script>{IMAGE_CHECK}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
