#!/usr/bin/env python3
"""The web viewer in a real browser: time to first view of a large image, pan and zoom frames.

A synthetic ``--size`` x ``--size`` float32 image (noise and ``--sources`` Gaussian sources,
SIN projection) is uploaded to a fresh ``caesar-rest serve`` and ``sep`` is run on it (neither
is timed). Then headless Debian Chromium (Playwright) opens the job in the viewer and measures:

* **first view**: from the viewer's start (``open``) to every tile of the fitted view loaded
  and drawn, with the catalogue overlay; ``cold`` is the first open (the server opens the
  file, computes the percentiles and the reduced level, renders and caches the tiles),
  ``warm`` a second open in a new browser context (server caches warm, browser cache empty);
  also the page's navigation-to-first-view time of the cold open;
* **pan**: ``--steps`` pointer moves of a drag (20 px each), one per animation frame; the
  intervals between animation frames during the drag (what a person sees as smoothness) and
  the viewer's own ``render()`` time per frame;
* **zoom**: ``--zooms`` wheel steps in at the centre then out again, each waited until the
  view's tiles have loaded; the settle time per step and the ``render()`` time.

Run: ``PYTHONPATH=src nice .venv/bin/python benchmarks/web_viewer.py --size 4096``
(``--size 1024`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caesar_rest.imaging.synthetic import field_header  # noqa: E402

from tests.support.server import LiveServer  # noqa: E402
from tests.support.web import CHROMIUM  # noqa: E402

FINAL = ("SUCCESS", "FAILURE", "CANCELED", "TIMED-OUT", "ABORTED")
TILES_DONE = """() => { const v = window.caesarViewer; if (!v || !v.info) return false;
  const imgs = [...document.querySelectorAll('#tiles img.tile')];
  return v.firstView != null && imgs.length > 0
    && [...v.tiles.values()].every((t) => t.loaded); }"""


def make_image(path: Path, n: int, sources: int, seed: int = 1) -> None:
    """Noise (rms 1e-4 Jy/beam) and ``sources`` circular Gaussians of 3-pixel sigma."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1e-4, (n, n)).astype(np.float32)
    yy, xx = np.mgrid[-12:13, -12:13]
    blob = np.exp(-(xx**2 + yy**2) / (2 * 3.0**2)).astype(np.float32)
    for x, y, peak in zip(
        rng.integers(20, n - 20, sources),
        rng.integers(20, n - 20, sources),
        rng.uniform(1e-3, 5e-2, sources),
        strict=True,
    ):
        data[y - 12 : y + 13, x - 12 : x + 13] += peak * blob
    pix = 1.5
    fwhm = 3.0 * 2.3548 * pix
    fits.PrimaryHDU(data, field_header(n, pix, (fwhm, fwhm, 0.0))).writeto(path)


def run_job(srv: LiveServer, image: Path) -> str:
    api = httpx.Client(base_url=srv.api, timeout=300)
    with image.open("rb") as fh:
        fid = api.post("/upload", files={"file": (image.name, fh)}).json()["uuid"]
    job = api.post("/job", json={"app": "sep", "data_inputs": fid, "job_inputs": {}}).json()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = api.get(f"/job/{job['job_id']}/status").json()["state"]
        if state in FINAL:
            break
        time.sleep(0.5)
    if state != "SUCCESS":
        raise SystemExit(f"sep job ended {state}")
    return str(job["job_id"])


def stats(values: list[float]) -> dict[str, float]:
    vals = sorted(values)
    if not vals:
        return {}
    p95 = vals[min(len(vals) - 1, int(round(0.95 * (len(vals) - 1))))]
    return {
        "n": len(vals),
        "median": round(statistics.median(vals), 2),
        "p95": round(p95, 2),
        "max": round(vals[-1], 2),
    }


def open_viewer(page: Any, url: str) -> dict[str, float]:
    page.goto(url)
    page.wait_for_function(TILES_DONE, timeout=120_000)
    return {
        "first_view_ms": round(page.evaluate("window.caesarViewer.firstView"), 1),
        "navigation_to_first_view_ms": round(
            page.evaluate("window.caesarViewer.t0 + window.caesarViewer.firstView"), 1
        ),
        "tiles": page.evaluate("window.caesarViewer.tiles.size"),
        "marks_ms": {k: round(v, 1) for k, v in page.evaluate("window.caesarViewer.marks").items()},
        "ellipses": page.evaluate("document.querySelectorAll('#ov-a ellipse').length"),
        "tile_fetch_ms": stats(
            [t["fetched"] for t in page.evaluate("window.caesarViewer.tileTimes")]
        ),
        "tile_kib": round(
            sum(t["bytes"] for t in page.evaluate("window.caesarViewer.tileTimes")) / 1024
        ),
    }


def pan(page: Any, steps: int) -> dict[str, Any]:
    box = page.locator("#view").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.evaluate("""() => { const v = window.caesarViewer; v.frames = []; v.raf = [];
      v.rafOn = true;
      const tick = (t) => { v.raf.push(t); if (v.rafOn) requestAnimationFrame(tick); };
      requestAnimationFrame(tick); }""")
    page.mouse.move(cx, cy)
    page.mouse.down()
    for i in range(steps):
        dx = 20 if (i // 25) % 2 == 0 else -20  # back and forth across tile edges
        cx += dx
        page.mouse.move(cx, cy)
        page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")
    page.mouse.up()
    raf = page.evaluate("() => { const v = window.caesarViewer; v.rafOn = false; return v.raf; }")
    frames = page.evaluate("window.caesarViewer.frames")
    intervals = [b - a for a, b in zip(raf, raf[1:], strict=False)]
    return {"frame_interval_ms": stats(intervals), "render_ms": stats(frames)}


def zoom(page: Any, zooms: int) -> dict[str, Any]:
    box = page.locator("#view").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.evaluate("window.caesarViewer.frames = []")
    settle: list[float] = []
    for delta in [-100] * zooms + [100] * zooms:
        t0 = time.perf_counter()
        page.mouse.wheel(0, delta)
        page.wait_for_function(TILES_DONE.replace("v.firstView != null && ", ""))
        settle.append((time.perf_counter() - t0) * 1000)
    frames = page.evaluate("window.caesarViewer.frames")
    return {"settle_ms": stats(settle), "render_ms": stats(frames)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--zooms", type=int, default=8)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        image = Path(tmp) / f"synth{args.size}.fits"
        make_image(image, args.size, args.sources)
        srv = LiveServer(Path(tmp) / "srv").start()
        try:
            job = run_job(srv, image)
            url = f"{srv.url}/app/#viewer/{job}"
            out: dict[str, Any] = {"size": args.size, "sources": args.sources}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                for label in ("cold", "warm"):
                    ctx = browser.new_context(viewport={"width": 1100, "height": 800})
                    page = ctx.new_page()
                    out[f"first_view_{label}"] = open_viewer(page, url)
                    if label == "warm":
                        out["pan"] = pan(page, args.steps)
                        out["zoom"] = zoom(page, args.zooms)
                    ctx.close()
                browser.close()
        finally:
            srv.stop()
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
