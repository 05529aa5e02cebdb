"""Simulated radio images with truth, for the source-finder comparison (issue 3).

Recipe (platform notes, section 2, extended with close pairs and resolved sources):

* noise: white Gaussian noise convolved with the beam, rescaled to rms 1e-4 Jy/beam;
* background: ``3e-4 (x/N - 0.5) + 2e-4 (y/N - 0.5) + 1e-4 sin(2 pi x/N) cos(pi y/N)``;
* beam 6" x 5", PA 30 deg (east of north), pixel 1.5";
* point sources with peak S/N from 3 to 200 drawn from dN/dS ~ S^-2, at least 12 px apart,
  5 % of them with a companion 6-10 px away (close pairs, S/N 5-50);
* resolved sources (4 % of the count): elliptical Gaussians 1.5-3 times the beam;
* extended blobs (5 per 2048^2): FWHM 25-60", peak 8-30 sigma.

``python benchmarks/simulate.py 2048 out.fits --nsrc 500`` writes ``out.fits`` and
``out_truth.csv`` (id, type, x, y (0-based px), ra, dec, peak_jy, snr, maj, min, pa (arcsec,
deg), flux_jy).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import fft

from caesar_rest.imaging.synthetic import field_header, pix_sigma

RMS = 1e-4
PIX = 1.5
BEAM = (6.0, 5.0, 30.0)
#: Scenarios: (minimum separation px, fraction of close pairs, pair separation range px).
STANDARD = (12.0, 0.05, (6.0, 10.0))
CROWDED = (8.0, 0.15, (5.0, 9.0))


def header(n: int) -> fits.Header:
    """The image header (SIN, FK5, beam, Jy/beam, 1.4 GHz)."""
    return field_header(n, PIX, BEAM, freq=1.4e9)


def _pix_sigma(maj: float, mnr: float, pa: float) -> tuple[float, float, float]:
    return pix_sigma(maj, mnr, pa, PIX)


def _add(img: np.ndarray, x: float, y: float, amp: float, sx: float, sy: float, th: float) -> None:
    r = int(math.ceil(6.0 * max(sx, sy)))
    n = img.shape[0]
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, n)
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, n)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    c, s = math.cos(th), math.sin(th)
    u = (xx - x) * c + (yy - y) * s
    w = -(xx - x) * s + (yy - y) * c
    img[y0:y1, x0:x1] += (amp * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))).astype(img.dtype)


def _add_blobs(
    img: np.ndarray, rng: np.random.Generator, truth: list[dict[str, float]]
) -> list[tuple[float, float, float]]:
    """Add the resolved blobs (about 5 per 2048^2 pixels) to ``img`` and their rows to ``truth``.

    Returns
    -------
    list of tuple
        ``(x, y, radius)`` of each blob, the region point sources keep out of.
    """
    n = img.shape[0]
    nblob = max(1, round(5 * (n / 2048) ** 2))
    blobs: list[tuple[float, float, float]] = []
    for _ in range(nblob):
        bx, by = rng.uniform(100, n - 100, 2)
        fw = rng.uniform(25, 60)
        bmin = fw * rng.uniform(0.6, 1.0)
        pa = rng.uniform(0, 180)
        amp = rng.uniform(8, 30) * RMS
        bs = _pix_sigma(fw, bmin, pa)
        _add(img, bx, by, amp, *bs)
        blobs.append((bx, by, 3.0 * fw / PIX))
        truth.append(
            {
                "type": "blob",
                "x": bx,
                "y": by,
                "peak_jy": amp,
                "maj": fw,
                "min": bmin,
                "pa": pa,
                "flux_jy": amp * fw * bmin / (BEAM[0] * BEAM[1]),
            }
        )
    return blobs


def make_image(
    n: int, nsrc: int, seed: int = 1, crowded: bool = False
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Image and truth rows.

    Parameters
    ----------
    n
        Side in pixels.
    nsrc
        Number of point sources (pairs and resolved sources come on top).
    seed
        Random seed.
    crowded
        The crowded scenario (:data:`CROWDED`): sources at least 8 px apart instead of 12, 15 %
        close pairs 5-9 px apart instead of 5 % at 6-10 px.

    Returns
    -------
    image, truth
        float32 image and one dict per true source.
    """
    rng = np.random.default_rng(seed)
    sx, sy, th = _pix_sigma(*BEAM)
    # Beam-correlated noise via FFT (the kernel's square sum normalises the rms).
    white = rng.standard_normal((n, n)).astype(np.float32)
    r = int(math.ceil(5 * sx))
    kern = np.zeros((n, n), dtype=np.float32)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    c, s = math.cos(th), math.sin(th)
    u = xx * c + yy * s
    w = -xx * s + yy * c
    k = np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))
    kern[np.ix_(np.arange(-r, r + 1) % n, np.arange(-r, r + 1) % n)] = k
    img = fft.irfft2(fft.rfft2(white, workers=2) * fft.rfft2(kern, workers=2), s=(n, n), workers=2)
    del white, kern
    img = (img * (RMS / img.std())).astype(np.float32)
    yv, xv = np.mgrid[0:n, 0:n].astype(np.float32) / np.float32(n)
    img += (
        3e-4 * (xv - 0.5) + 2e-4 * (yv - 0.5) + 1e-4 * np.sin(2 * np.pi * xv) * np.cos(np.pi * yv)
    )
    del xv, yv
    truth: list[dict[str, float]] = []
    blobs = _add_blobs(img, rng, truth)
    pos: list[tuple[float, float]] = []
    grid: dict[tuple[int, int], list[tuple[float, float]]] = {}

    def free(x: float, y: float, d: float) -> bool:
        if any(math.hypot(x - bx, y - by) < br for bx, by, br in blobs):
            return False
        gx, gy = int(x // 24), int(y // 24)
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                for px, py in grid.get((gx + i, gy + j), []):
                    if math.hypot(x - px, y - py) < d:
                        return False
        return True

    def place(x: float, y: float) -> None:
        pos.append((x, y))
        grid.setdefault((int(x // 24), int(y // 24)), []).append((x, y))

    def snr_draw() -> float:
        # dN/dS ~ S^-2 between 3 and 200: inverse CDF.
        a, b = 1 / 3.0, 1 / 200.0
        return float(1.0 / (a - rng.uniform() * (a - b)))

    def add_point(kind: str, x: float, y: float, snr: float) -> None:
        _add(img, x, y, snr * RMS, sx, sy, th)
        truth.append(
            {
                "type": kind,
                "x": x,
                "y": y,
                "peak_jy": snr * RMS,
                "maj": BEAM[0],
                "min": BEAM[1],
                "pa": BEAM[2],
                "flux_jy": snr * RMS,
            }
        )

    tries = 0
    min_sep, pair_frac, (pair_lo, pair_hi) = CROWDED if crowded else STANDARD
    npairs = round(pair_frac * nsrc)
    nres = round(0.04 * nsrc)
    while len(pos) < nsrc + npairs + nres and tries < 100 * nsrc:
        tries += 1
        x, y = rng.uniform(10, n - 10, 2)
        if not free(x, y, min_sep):
            continue
        k = len(pos)
        if k < nsrc:
            place(x, y)
            add_point("point", x, y, snr_draw())
        elif k < nsrc + npairs:
            d = rng.uniform(pair_lo, pair_hi)
            a = rng.uniform(0, 2 * np.pi)
            x2, y2 = x + d * math.cos(a), y + d * math.sin(a)
            if not (10 < x2 < n - 10 and 10 < y2 < n - 10 and free(x2, y2, min_sep)):
                continue
            place(x, y)
            place(x2, y2)
            add_point("pair", x, y, float(rng.uniform(5, 50)))
            add_point("pair", x2, y2, float(rng.uniform(5, 50)))
        else:
            place(x, y)
            f = rng.uniform(1.5, 3.0)
            maj, mnr, pa = BEAM[0] * f, BEAM[1] * f * rng.uniform(0.6, 1.0), rng.uniform(0, 180)
            snr = float(rng.uniform(10, 60))
            _add(img, x, y, snr * RMS, *_pix_sigma(maj, mnr, pa))
            truth.append(
                {
                    "type": "resolved",
                    "x": x,
                    "y": y,
                    "peak_jy": snr * RMS,
                    "maj": maj,
                    "min": mnr,
                    "pa": pa,
                    "flux_jy": snr * RMS * maj * mnr / (BEAM[0] * BEAM[1]),
                }
            )
    return img, truth


def write(n: int, path: Path, nsrc: int, seed: int = 1, crowded: bool = False) -> Path:
    """Write the image and ``<stem>_truth.csv``.

    Parameters
    ----------
    n
        Side in pixels.
    path
        Output FITS.
    nsrc
        Number of point sources.
    seed
        Random seed.
    crowded
        The crowded scenario (see :func:`make_image`).

    Returns
    -------
    pathlib.Path
        The truth file.
    """
    img, truth = make_image(n, nsrc, seed, crowded)
    h = header(n)
    fits.PrimaryHDU(img, header=h).writeto(path, overwrite=True)
    w = WCS(h)
    tpath = path.with_name(path.stem + "_truth.csv")
    with tpath.open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(
            ["id", "type", "x", "y", "ra", "dec", "peak_jy", "snr", "maj", "min", "pa", "flux_jy"]
        )
        for i, t in enumerate(truth):
            ra, dec = w.pixel_to_world_values(t["x"], t["y"])
            wr.writerow(
                [
                    i,
                    t["type"],
                    f"{t['x']:.3f}",
                    f"{t['y']:.3f}",
                    f"{float(ra):.7f}",
                    f"{float(dec):.7f}",
                    f"{t['peak_jy']:.6g}",
                    f"{t['peak_jy'] / RMS:.3f}",
                    f"{t['maj']:.3f}",
                    f"{t['min']:.3f}",
                    f"{t['pa']:.2f}",
                    f"{t['flux_jy']:.6g}",
                ]
            )
    return tpath


def main() -> None:
    """Command line: ``simulate.py N OUT.fits [--nsrc K] [--seed S]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--nsrc", type=int, default=None, help="point sources (default ~500 per 2k^2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crowded", action="store_true", help="the crowded scenario")
    a = ap.parse_args()
    nsrc = a.nsrc if a.nsrc is not None else round(500 * (a.n / 2048) ** 2)
    print(write(a.n, a.out, nsrc, a.seed, a.crowded))


if __name__ == "__main__":
    main()
