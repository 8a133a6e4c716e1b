"""The README's picture of a run report: one section of the page, as headless Chromium
draws it.

    python tools/report_picture.py --page=runs/default/report/index.html --section=anatomy \
        --height=1100 --out=docs/images/report.png
"""

from __future__ import annotations

import argparse
import os
import tempfile

from PIL import Image

from jaxdet.report import browser


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--page", required=True)
    ap.add_argument("--section", default="anatomy", help="the id of an <h2> of the page")
    ap.add_argument("--height", type=int, default=1100)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        whole = os.path.join(tmp, "whole.png")
        got = browser.render(a.page, size=(a.width, a.height))
        if a.section not in got["sections"]:
            raise SystemExit(f"error: the page has no section {a.section!r}; it has {sorted(got['sections'])}")
        top = max(got["sections"][a.section] - 10, 0)
        browser.render(a.page, screenshot=whole, size=(a.width, top + a.height))
        Image.open(whole).crop((0, top, a.width, top + a.height)).save(a.out, optimize=True)
    print(f"wrote {a.out} ({a.section} at {top} px; {got['images']} images on the page, {got['broken']} broken)")


if __name__ == "__main__":
    main()
