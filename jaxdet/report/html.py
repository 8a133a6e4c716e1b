"""The page's building blocks: escaped text, tables, images inlined as data URIs (so one
.html file holds everything: no server, no network), markdown tables from the files runs
write (results.md, per_class.md), and the page shell with its load check.

The load check is a few lines of plain JavaScript in the page itself (nothing fetched): on
`load` it counts the images and the broken ones into `<body data-images data-broken>`,
and any script error or console error / warning into `data-errors` (and where each
section starts, in CSS pixels, into `data-sections`), so a headless browser's DOM says whether the page
rendered whole (tests/test_report.py).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.gallery img{max-width:32%;vertical-align:top}
.note{color:#666;font-size:.9em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
nav a{margin-right:1em}
"""

_CHECK = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); }, true);
['error', 'warn'].forEach(function (level) {
  var plain = console[level];
  console[level] = function () { window.__errors.push(level); return plain.apply(console, arguments); };
});
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-broken', String(broken.length));
  document.body.setAttribute('data-errors', String(window.__errors.length));
  var tops = Array.prototype.map.call(document.querySelectorAll('h2[id]'), function (h) {
    return h.id + ':' + Math.round(h.getBoundingClientRect().top + window.scrollY);
  });
  document.body.setAttribute('data-sections', tops.join(','));
});
"""


def esc(text) -> str:
    return html.escape(str(text))


def image(path: str, alt: str) -> str:
    """An <img> holding the PNG at `path` as a data URI."""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img alt="{esc(alt)}" title="{esc(alt)}" src="data:image/png;base64,{data}">'


def gallery(paths: Sequence[str]) -> str:
    return '<div class="gallery">' + "".join(image(p, os.path.basename(p)) for p in paths) + "</div>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    if value is None:
        return '<td class="n">-</td>'
    return f"<td>{esc(value)}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A table; a header of empty names is left out."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def markdown(text: str) -> str:
    """Markdown tables (`| a | b |` rows) as tables, headings and lines as paragraphs, and
    list items as a list: what results.md and per_class.md hold."""
    out, rows, items = [], [], []

    def flush() -> None:
        if rows:
            body = [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
            out.append(table(rows[0], body))
            rows.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            rows.append([c.strip() for c in s.strip("|").split("|")])
            continue
        if s.startswith(("- ", "* ")):
            if rows:
                flush()
            items.append(s[2:])
            continue
        flush()
        if s.startswith("#"):
            out.append(f"<h3>{esc(s.lstrip('#').strip())}</h3>")
        elif s:
            out.append(f"<p>{esc(s)}</p>")
    flush()
    return "\n".join(out)


def page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: `sections` (anchor, heading, body html) under a table of contents."""
    nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<h2 id="{a}">{esc(h)}</h2>\n{b}\n' for a, h, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style><script>{_CHECK}</script></head>"
        f"<body><h1>{esc(title)}</h1><nav>{nav}</nav>\n{body}</body></html>\n"
    )
