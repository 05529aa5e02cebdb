"""Run the ``cutex`` app: ``python -m caesar_rest.apps.cutex_run --input X --outdir D [...]``.

The method of CuTEx (Molinari et al. 2011, A&A 530, A133), in four steps:

1. second derivatives of the background-subtracted image along four directions (x, y and the
   two diagonals), with the 5-point Lagrangian stencil; the curvature is minus each of them;
2. thresholding: a pixel is significant when its curvature in all four directions exceeds
   ``seedthr`` times the robust rms (1.4826 MAD) of that direction's curvature map;
3. grouping: 8-connected clusters of significant pixels with at least ``npixmin`` pixels; the
   local maxima of the image inside a cluster are its candidate sources;
4. fitting: the candidates of a cluster are fitted together (up to :data:`MAX_GROUP`; more are
   fitted in groups by brightness) with elliptical Gaussians plus a constant, on a window
   around the cluster; the sizes start at the PSF (``npixpsf`` pixels FWHM) and stay within
   ``psflimmin``-``psflimmax`` times it, positions within one PSF of the candidate.

A fit that fails keeps the candidate's peak and the PSF size (flag ``FLAG_FIT_FAILED``).
Background and rms come from SEP's mesh (64-pixel boxes, 3x3 median filter).

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sep
from scipy import ndimage
from scipy.optimize import least_squares

from caesar_rest.apps.adapt import Moments, map_medians, moments_table, truncated_labels
from caesar_rest.apps.console import say
from caesar_rest.apps.cutex_app import CutexApp
from caesar_rest.apps.products import Extraction, MapStyle
from caesar_rest.apps.program import Finder, program_main
from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_FIT_FAILED, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import make_table
from caesar_rest.imaging.fits_image import FWHM_PER_SIGMA, FitsImage

PROG = "cutex_run"
ORIGIN = "caesar-rest cutex"
#: Most candidates fitted together.
MAX_GROUP = 6
#: Most candidates fitted in one run (the faintest beyond are dropped, with a log line).
MAX_CANDIDATES = 20000

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def curvatures(img: F32) -> F32:
    """Minus the second derivatives in four directions (x, y, both diagonals), 5-point stencil.

    Parameters
    ----------
    img
        Background-subtracted image (0 at blank pixels).

    Returns
    -------
    numpy.ndarray
        Shape ``(4, ny, nx)``; diagonal derivatives per unit length (divided by 2, the square
        of the diagonal step).
    """
    p = np.pad(img.astype(np.float32), 2, mode="edge")
    ny, nx = img.shape

    def at(dy: int, dx: int) -> F32:
        return p[2 + dy : 2 + dy + ny, 2 + dx : 2 + dx + nx]

    out = np.empty((4, ny, nx), dtype=np.float32)
    c = at(0, 0)
    for k, (sy, sx) in enumerate(((0, 1), (1, 0), (1, 1), (1, -1))):
        d2 = (
            -at(-2 * sy, -2 * sx)
            + 16 * at(-sy, -sx)
            - 30 * c
            + 16 * at(sy, sx)
            - at(2 * sy, 2 * sx)
        ) / 12.0
        out[k] = -d2 / (sy * sy + sx * sx)
    return out


def _robust_rms(values: F32) -> float:
    sub = values[:: max(1, values.size // 2_000_000)]
    med = float(np.median(sub))
    return max(float(np.median(np.abs(sub - med))) * 1.4826, 1e-30)


def significant_pixels(curv: F32, mask: npt.NDArray[np.bool_], thr: float) -> npt.NDArray[np.bool_]:
    """Pixels whose curvature exceeds ``thr`` rms in all four directions (and not blank)."""
    sig = ~mask
    for k in range(curv.shape[0]):
        sig &= curv[k] > thr * _robust_rms(curv[k].ravel())
    return sig


def _gauss_model(p: F64, yy: F64, xx: F64, n: int) -> F64:
    model = np.full(yy.shape, p[-1])
    for i in range(n):
        a, x0, y0, sx, sy, th = p[6 * i : 6 * i + 6]
        c, s = math.cos(th), math.sin(th)
        u = (xx - x0) * c + (yy - y0) * s
        w = -(xx - x0) * s + (yy - y0) * c
        model = model + a * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))
    return model


@dataclass
class Fit:
    """Fitted components of one group: rows of (amp, x, y, sx, sy, theta), errors of x and y,
    and whether the fit converged."""

    params: F64
    pos_err: F64
    ok: bool


def fit_group(
    sub: F32,
    cand: list[tuple[int, int]],
    window: tuple[slice, slice],
    psf_sigma: float,
    limits: tuple[float, float],
    rms: float,
) -> Fit:
    """Fit Gaussians to the candidates ``cand`` ((y, x) pixels) on ``sub[window]``."""
    ys, xs = window
    data = sub[ys, xs].astype(np.float64)
    yy, xx = np.mgrid[ys, xs].astype(np.float64)
    n = len(cand)
    lo_s, hi_s = limits[0] * psf_sigma, limits[1] * psf_sigma
    s0 = min(max(psf_sigma, lo_s), hi_s)
    p0, lo, hi = [], [], []
    for y, x in cand:
        amp = max(float(sub[y, x]), rms)
        p0 += [amp, x, y, s0, s0, 0.0]
        lo += [0.0, x - 2 * psf_sigma, y - 2 * psf_sigma, lo_s, lo_s, -math.pi]
        hi += [10 * amp, x + 2 * psf_sigma, y + 2 * psf_sigma, hi_s, hi_s, math.pi]
    bkg = float(np.median(data))
    p0.append(bkg)
    lo.append(-abs(bkg) - 10 * rms)
    hi.append(abs(bkg) + 10 * rms)
    p0 = [
        min(max(v, a + 1e-9 * (b - a)), b - 1e-9 * (b - a))
        for v, a, b in zip(p0, lo, hi, strict=True)
    ]
    fallback = np.array([[max(float(sub[y, x]), 0.0), x, y, s0, s0, 0.0] for y, x in cand])
    try:
        res = least_squares(
            lambda p: (_gauss_model(p, yy, xx, n) - data).ravel(),
            np.asarray(p0),
            bounds=(np.asarray(lo), np.asarray(hi)),
            max_nfev=60 * (n + 1),
        )
    except (ValueError, np.linalg.LinAlgError):
        return Fit(fallback, np.full((n, 2), np.nan), False)
    if not res.success and res.status <= 0:
        return Fit(fallback, np.full((n, 2), np.nan), False)
    err = np.full((n, 2), np.nan)
    try:
        dof = max(data.size - res.x.size, 1)
        cov = np.linalg.pinv(res.jac.T @ res.jac) * (2 * res.cost / dof)
        d = np.sqrt(np.clip(np.diag(cov), 0, None))
        for i in range(n):
            err[i] = d[6 * i + 1], d[6 * i + 2]
    except np.linalg.LinAlgError:
        pass
    return Fit(res.x[:-1].reshape(n, 6), err, True)


def _candidates(
    sub: F32, labels: npt.NDArray[np.int32], n: int
) -> dict[int, list[tuple[int, int]]]:
    # Local maxima (3x3) of the image inside each cluster; at least the cluster's brightest.
    peaks = (sub == ndimage.maximum_filter(sub, size=3)) & (labels > 0)
    out: dict[int, list[tuple[int, int]]] = {}
    for y, x in zip(*np.nonzero(peaks), strict=True):
        out.setdefault(int(labels[y, x]), []).append((int(y), int(x)))
    for lab, pos in enumerate(ndimage.maximum_position(sub, labels, range(1, n + 1)), start=1):
        if lab not in out:
            out[lab] = [(int(pos[0]), int(pos[1]))]
    for lab in out:
        out[lab].sort(key=lambda p: -float(sub[p]))
    return out


@dataclass
class CutexResult:
    """What :func:`extract_sources` found."""

    table: Any
    background: F32
    rms: F32
    n_clusters: int
    n_candidates: int
    n_failed: int
    timings_s: dict[str, float]


def extract_sources(image: FitsImage, opts: Mapping[str, Any]) -> CutexResult:
    """Find and fit the compact sources of ``image`` (see the module notes).

    Parameters
    ----------
    image
        The image.
    opts
        Resolved options.

    Returns
    -------
    CutexResult
        The catalogue, the maps and counts.
    """
    t0 = time.perf_counter()
    mask = image.mask
    work = np.ascontiguousarray(np.where(mask, np.float32(0.0), image.data), dtype=np.float32)
    ny, nx = work.shape
    bkg = sep.Background(work, mask=mask, bw=min(64, nx), bh=min(64, ny), fw=3, fh=3)
    back = np.ascontiguousarray(bkg.back(dtype=np.float32))
    rms = np.ascontiguousarray(bkg.rms(dtype=np.float32))
    rms = np.where(np.isfinite(rms) & (rms > 0), rms, np.float32(np.nanmedian(rms) or 1.0))
    sub = np.where(mask, np.float32(0.0), work - back).astype(np.float32)
    t1 = time.perf_counter()
    sig = significant_pixels(curvatures(sub), mask, float(opts["seedthr"]))
    labels, n = ndimage.label(sig, structure=np.ones((3, 3), dtype=bool))
    labels = np.asarray(labels, dtype=np.int32)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < int(opts["npixmin"])
    small[0] = True
    labels[small[labels]] = 0
    labels, n = ndimage.label(labels > 0, structure=np.ones((3, 3), dtype=bool))
    labels = np.asarray(labels, dtype=np.int32)
    cands = _candidates(sub, labels, n)
    t2 = time.perf_counter()
    table, n_cand, n_failed = _fit_all(image, sub, back, rms, labels, cands, opts)
    t3 = time.perf_counter()
    return CutexResult(
        table=table,
        background=back,
        rms=rms,
        n_clusters=int(n),
        n_candidates=n_cand,
        n_failed=n_failed,
        timings_s={"background": t1 - t0, "detection": t2 - t1, "fitting": t3 - t2},
    )


def _fit_all(
    image: FitsImage,
    sub: F32,
    back: F32,
    rms: F32,
    labels: npt.NDArray[np.int32],
    cands: dict[int, list[tuple[int, int]]],
    opts: Mapping[str, Any],
) -> tuple[Any, int, int]:
    psf_sigma = float(opts["npixpsf"]) / FWHM_PER_SIGMA
    limits = (float(opts["psflimmin"]), float(opts["psflimmax"]))
    ny, nx = sub.shape
    objs = ndimage.find_objects(labels)
    trunc = truncated_labels(labels, image.mask)
    rows: list[tuple[F64, F64, int, int, int, bool]] = []  # params, err, island, members, npix
    budget = MAX_CANDIDATES
    npix = np.bincount(labels.ravel())
    for lab, pos in sorted(cands.items()):
        if budget <= 0:
            break
        sl = objs[lab - 1]
        if sl is None:
            continue
        pad = int(math.ceil(3 * psf_sigma)) + 1
        window = (
            slice(max(sl[0].start - pad, 0), min(sl[0].stop + pad, ny)),
            slice(max(sl[1].start - pad, 0), min(sl[1].stop + pad, nx)),
        )
        local_rms = float(rms[pos[0]])
        for g in range(0, len(pos), MAX_GROUP):
            group = pos[g : g + MAX_GROUP][:budget]
            budget -= len(group)
            fit = fit_group(sub, group, window, psf_sigma, limits, local_rms)
            for i in range(len(group)):
                rows.append((fit.params[i], fit.pos_err[i], lab, len(pos), int(npix[lab]), fit.ok))
    n_failed = sum(1 for r in rows if not r[5])
    if not rows:
        return make_table(None), 0, 0
    p = np.array([r[0] for r in rows])
    err = np.array([r[1] for r in rows])
    island = np.array([r[2] for r in rows], dtype=np.int64)
    x = np.clip(p[:, 1], 0, nx - 1)
    y = np.clip(p[:, 2], 0, ny - 1)
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    flags = np.zeros(len(rows), dtype=np.int64)
    flags[np.array([r[3] > 1 for r in rows])] |= FLAG_BLENDED
    flags[np.isin(island, list(trunc))] |= FLAG_TRUNCATED
    flags[np.array([not r[5] for r in rows])] |= FLAG_FIT_FAILED
    cov = np.zeros((len(rows), 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = err[:, 0] ** 2, err[:, 1] ** 2
    sx, sy = p[:, 3], p[:, 4]
    a, b = np.maximum(sx, sy), np.minimum(sx, sy)
    theta = np.where(sx >= sy, p[:, 5], p[:, 5] + math.pi / 2)
    m = Moments(
        x=x,
        y=y,
        a=a * FWHM_PER_SIGMA,
        b=b * FWHM_PER_SIGMA,
        theta=theta,
        cov=cov,
        peak=p[:, 0],
        pixel_flux=2 * math.pi * p[:, 0] * sx * sy,
        npix=np.array([r[4] for r in rows], dtype=np.float64),
        rms=rms[yi, xi].astype(np.float64),
        bkg=back[yi, xi].astype(np.float64),
        island_of=island,
        flags=flags,
    )
    return moments_table(image, m), len(rows), n_failed


class CutexFinder(Finder):
    """The ``cutex`` program: :func:`extract_sources` and its log lines."""

    prog = PROG
    description = "Extract compact sources with the CuTEx curvature method."
    maps = MapStyle(ORIGIN)

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Find and fit the sources (see :func:`extract_sources`)."""
        result = extract_sources(image, opts)
        say(
            PROG,
            f"curvature above {opts['seedthr']} rms in 4 directions: {result.n_clusters} "
            f"clusters of >= {opts['npixmin']} px, {result.n_candidates} candidates fitted "
            f"({result.n_failed} fits failed)",
        )
        return Extraction(
            table=result.table,
            background=result.background,
            rms=result.rms,
            n_islands=result.n_clusters,
            timings=result.timings_s,
            counts={"n_fits_failed": result.n_failed},
            summary=map_medians(image, result.background, result.rms),
        )


FINDER = CutexFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`)."""
    return program_main(CutexApp(), FINDER, argv)


if __name__ == "__main__":
    sys.exit(main())
