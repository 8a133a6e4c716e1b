"""Opening a report in a real browser: headless Chromium (Debian's `chromium` package)
loads the page, and its DOM after `load` says how many images there are, how many did not
load and how many script errors happened (html.py's load check); its console messages
come through Chromium's log. Also takes a screenshot (the README's picture)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# As the machine's notes say: no sandbox as root, no GPU, no network chatter (this page needs none).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")  # fmt: skip


def find() -> str | None:
    """The path of a Chromium / Chrome executable, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(exe: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render(page: str, screenshot: str | None = None, size: tuple[int, int] = (1280, 2400),
           timeout: float = 120.0) -> dict:  # fmt: skip
    """Loads the file `page` in headless Chromium: {"images", "broken", "errors" (script
    errors, console errors and warnings the page caught), "console" (every console line
    Chromium logged: a report writes none), "sections" ({id: top in pixels})}; with
    `screenshot`, also a PNG of the top `size` (width, height) pixels there."""
    exe = find()
    if exe is None:
        raise FileNotFoundError(f"no Chromium found (looked for {', '.join(CANDIDATES)}); apt-get install chromium")
    url = "file://" + os.path.abspath(page)
    window = f"--window-size={size[0]},{size[1]}"  # one layout for the DOM's offsets and the screenshot
    done = _run(exe, ["--enable-logging=stderr", "--v=0", window, "--dump-dom", url], timeout)
    body = re.search(r"<body([^>]*)>", done.stdout)
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1))) if body else {}
    if not {"images", "broken", "errors"} <= set(attrs):
        raise RuntimeError(
            f"the page's load check did not run (chromium exit {done.returncode}): {done.stderr[-2000:]}"
        )
    # Chromium logs console messages, whatever their level, as ...:INFO:CONSOLE:<line>] "message",
    # source: ...; its own start-up noise (D-Bus, GPU) never has that tag.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    tops = re.search(r'data-sections="([^"]*)"', body.group(1))
    sections = dict(item.rsplit(":", 1) for item in tops.group(1).split(",") if item) if tops else {}
    result = {"images": int(attrs["images"]), "broken": int(attrs["broken"]), "errors": int(attrs["errors"]),
              "console": console, "sections": {k: int(v) for k, v in sections.items()}}  # fmt: skip
    if screenshot:
        _run(exe, [window, f"--screenshot={os.path.abspath(screenshot)}", url], timeout)
        if not os.path.exists(screenshot):
            raise RuntimeError(f"chromium wrote no screenshot to {screenshot}")
    return result
