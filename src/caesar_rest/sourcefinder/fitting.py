"""Multi-component 2-D Gaussian fits of islands (spec section 6), batched.

Every island (or nested source) to fit becomes a "unit": its pixels, the background-subtracted
values in units of the mean local noise, and ``K`` start components. Units with the same ``K``
are fitted together by the bounded Levenberg-Marquardt solver of :mod:`.lm`, written with NumPy
arrays of shape ``(units, pixels, parameters)``: the model, its analytic Jacobian, the normal
equations and their solutions are all computed for hundreds of units at once, so the Python
overhead is per iteration, not per source.

Model (spec 6.2): ``M(x, y) = offset + sum_k A_k exp(-(u^2 / 2 sx^2 + v^2 / 2 sy^2))`` with
``u, v`` the offsets rotated by ``theta`` (radians, counter-clockwise from +x). The offset is
fixed at 0 above the background map unless ``fit.free_bkg``.

Deviations from upstream, all recommended or allowed by the spec: the background map (or the
per-source box value) is subtracted pixel by pixel before the fit; no pre-fit is needed;
bound widening is capped at 10 rounds and iterations at 200; when the seeding finds no peak a
single moment-based component is fitted (spec 6.3.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from caesar_rest.sourcefinder._types import F64, FWHM, I64, B
from caesar_rest.sourcefinder.islands import IslandSet, moment_ellipse
from caesar_rest.sourcefinder.lm import (
    CONVERGED,
    CONVERGED_AT_BOUND,
    NOT_CONVERGED,
    NPAR,
    lm_fit,
)
from caesar_rest.sourcefinder.options import MAX_FIT_ITERS, MAX_FIT_WIDENINGS, FitSettings

#: Smallest sigma (pixels) a component may take.
MIN_SIGMA = 0.1
#: Fit quality codes (spec 6.5).
QUALITY_BAD, QUALITY_LOW, QUALITY_MEDIUM, QUALITY_HIGH = 0, 1, 2, 3
QUALITY_NAMES = {0: "BAD", 1: "LOW", 2: "MEDIUM", 3: "HIGH"}
#: Values per batch of the (units x pixels x parameters) Jacobian (bounds the memory).
BATCH_VALUES = 100_000

#: Correlated noise: the formal least-squares covariance assumes independent pixels. For
#: noise correlated over the beam it underestimates the variances by about this factor times
#: the beam area in pixels (calibrated on simulated beam-convolved noise; see the tests).
CORRELATION_FACTOR = 0.5


@dataclass
class FitConfig:
    """The fit settings as the fitter uses them.

    :meth:`of` makes them from the user's :class:`~caesar_rest.sourcefinder.options.FitSettings`:
    the angle bound in radians, the loop counts capped, the secondary-peak threshold and the
    beam resolved.
    """

    max_components: int = 3
    ampl_limit: float | None = 0.3
    sigma_limit: float | None = 0.3
    theta_limit: float | None = math.pi / 2
    pos_limit: float | None = 3.0
    free_bkg: bool = False
    bkg_limits: bool = True
    fix_sigma: bool = False
    fix_theta: bool = False
    peak_zthr: float = 5.0
    tol: float = 0.01
    max_iters: int = MAX_FIT_ITERS
    widen: bool = True
    n_widen: int = MAX_FIT_WIDENINGS
    widen_step: float = 0.1
    retry: bool = True
    chi2_cut: float | None = 5.0
    beam_area_pix: float = 1.0
    #: Beam ``(sigma_major, sigma_minor, theta)`` in pixels (theta from +x), for the point model.
    beam_sigma: tuple[float, float, float] | None = None
    #: Point-model test threshold on the effective chi2 gain of the free shape (None: off).
    point_model_thr: float | None = None
    #: Blend test threshold on the effective chi2 gain of two components (None: off).
    deblend_thr: float | None = None

    @classmethod
    def of(
        cls,
        fit: FitSettings,
        peak_zthr: float,
        beam_area_pix: float,
        beam_sigma: tuple[float, float, float],
    ) -> FitConfig:
        """The configuration of a run.

        Parameters
        ----------
        fit
            The fit settings.
        peak_zthr
            Significance of secondary peaks (``max(fit.peak_zthr, seed threshold)``).
        beam_area_pix, beam_sigma
            The beam: area in pixels and ``(sigma_major, sigma_minor, theta)`` in pixels.

        Returns
        -------
        FitConfig
            The configuration.
        """
        theta = None if fit.theta_limit_deg is None else math.radians(fit.theta_limit_deg)
        return cls(
            max_components=fit.max_components,
            ampl_limit=fit.ampl_limit,
            sigma_limit=fit.sigma_limit,
            theta_limit=theta,
            pos_limit=fit.pos_limit,
            free_bkg=fit.free_bkg,
            bkg_limits=fit.bkg_limits,
            fix_sigma=fit.fix_sigma,
            fix_theta=fit.fix_theta,
            peak_zthr=peak_zthr,
            tol=fit.tol,
            max_iters=min(fit.max_iters, MAX_FIT_ITERS) or 1,
            widen=fit.widen_bounds,
            n_widen=min(fit.n_retries, MAX_FIT_WIDENINGS),
            widen_step=fit.bound_step,
            retry=fit.retry,
            chi2_cut=fit.chi2_cut,
            beam_area_pix=beam_area_pix,
            beam_sigma=beam_sigma,
            point_model_thr=fit.point_model_thr,
            deblend_thr=fit.deblend_thr,
        )


@dataclass
class Units:
    """Pixels of the units to fit (an :class:`IslandSet`) and their start components."""

    pix: IslandSet
    #: Per unit: start components, each row (A [Jy/beam above bkg], x, y, sx, sy, theta).
    seeds: list[F64]
    #: Per unit: (bkg, rms) constants to use instead of the per-pixel maps (NaN = maps).
    box_bkg: F64 | None = None
    box_rms: F64 | None = None


@dataclass
class FitResult:
    """Fitted components and per-unit fit information.

    Component arrays (length = number of components): ``unit``, ``comp`` (0-based index in its
    unit), ``params`` (n, 6: A [Jy/beam], x, y [full-image px], sx, sy [px], theta [rad]),
    ``errors`` (n, 6), ``flux``/``flux_err`` (Jy).
    Unit arrays: ``chi2``, ``ndf``, ``status``, ``quality``, ``ncomp``, ``offset`` (Jy/beam),
    ``noise`` (the constant error used), ``flux_total``/``flux_total_err`` (Jy).
    """

    unit: I64
    comp: I64
    params: F64
    errors: F64
    flux: F64
    flux_err: F64
    chi2: F64
    ndf: I64
    status: I64
    quality: I64
    ncomp: I64
    offset: F64
    noise: F64
    flux_total: F64
    flux_total_err: F64
    fitted: B = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Per unit: the beam-shaped (point) model was kept (see :func:`fit_units`).
    point_model: B = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Per unit: a one-component fit was split into a blended pair (see :func:`fit_units`).
    deblended: B = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.chi2.size)


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def find_peaks(isl: IslandSet, values: npt.NDArray[np.floating]) -> B:
    """Local maxima of each island, per pixel (in the island set's pixel order).

    A peak is a pixel at least as bright as its 8 neighbours of the same island (neighbours
    outside it do not count), with all 4 neighbours in the island (peaks on the island contour
    are never seeds, spec 6.3.2). Of touching equal pixels only the first is kept.

    Neighbours are looked up among the islands' own pixels (sorted pixel keys), not on an
    image-sized canvas: the islands hold a few per cent of the pixels, so this keeps the
    memory of the step proportional to them.

    Parameters
    ----------
    isl
        Islands (pixels of different islands never coincide).
    values
        Background-subtracted value of every pixel of ``isl``.

    Returns
    -------
    numpy.ndarray
        Boolean per pixel.
    """
    n = isl.xs.size
    if n == 0:
        return np.zeros(0, dtype=bool)
    xs = isl.xs.astype(np.int64)
    ys = isl.ys.astype(np.int64)
    x0, y0 = int(xs.min()) - 1, int(ys.min()) - 1
    w = int(xs.max()) - x0 + 2
    keys = (ys - y0) * w + (xs - x0)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    own = isl.island_index()
    v0 = np.asarray(values, dtype=np.float32)
    peak = np.ones(n, dtype=bool)
    interior = np.ones(n, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            k2 = keys + (dy * w + dx)
            pos = np.minimum(np.searchsorted(skeys, k2), n - 1)
            nb = order[pos]
            same = (skeys[pos] == k2) & (own[nb] == own)
            vn = v0[nb]
            # Ties: the earlier pixel in raster order wins.
            earlier = (dy < 0) or (dy == 0 and dx < 0)
            beaten = (vn >= v0) if earlier else (vn > v0)
            peak &= ~(same & beaten)
            if dx == 0 or dy == 0:
                interior &= same
    return peak & interior & np.isfinite(v0)


def seed_components(
    isl: IslandSet,
    is_peak: B,
    beam_sigma: tuple[float, float, float],
    peak_zthr: float,
    max_components: int,
) -> list[F64]:
    """Start components of every island.

    The brightest peak always counts; other peaks need a significance of at least
    ``peak_zthr``. Up to ``max_components`` peaks, brightest first, each with the beam shape.
    With one peak (or none) a single component starts at the flux-weighted centroid with the
    island's moment shape, or the beam's when the moments are smaller than the beam.

    Parameters
    ----------
    isl
        Islands (measured).
    is_peak
        Per-pixel peak flags (:func:`find_peaks`).
    beam_sigma
        Beam (sigma_major, sigma_minor, theta) in pixels/radians.
    peak_zthr
        Significance threshold of secondary peaks.
    max_components
        Maximum components per island.

    Returns
    -------
    list of numpy.ndarray
        Per island, ``(K, 6)`` start values (A above background in Jy/beam, x, y, sx, sy,
        theta).
    """
    bsx, bsy, bth = beam_sigma
    sub = (isl.flux - isl.bkg).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = sub / isl.rms
    unit = isl.island_index()
    cand = np.flatnonzero(is_peak)
    # Sort candidates by island, then by decreasing flux.
    order = np.lexsort((-sub[cand], unit[cand]))
    cand = cand[order]
    cu = unit[cand]
    first = np.ones(cand.size, dtype=bool)
    first[1:] = cu[1:] != cu[:-1]
    keep = first | (z[cand] >= peak_zthr)
    cand, cu = cand[keep], cu[keep]
    starts = np.searchsorted(cu, np.arange(isl.n))
    ends = np.searchsorted(cu, np.arange(isl.n), side="right")
    smaj, smin, sth = moment_ellipse(isl.cxx, isl.cyy, isl.cxy)
    amp0 = np.maximum.reduceat(sub, isl.offsets[:-1]) if isl.n else np.zeros(0)
    out: list[F64] = []
    for i in range(isl.n):
        k = min(int(ends[i] - starts[i]), max_components)
        if k <= 1:
            if smaj[i] * smin[i] >= bsx * bsy and smin[i] > 0:
                shape = (smaj[i], max(smin[i], MIN_SIGMA), sth[i])
            else:
                shape = (bsx, bsy, bth)
            out.append(np.array([[amp0[i], isl.xw[i], isl.yw[i], *shape]]))
            continue
        c = cand[starts[i] : starts[i] + k]
        comp = np.empty((k, NPAR))
        comp[:, 0] = sub[c]
        comp[:, 1] = isl.xs[c]
        comp[:, 2] = isl.ys[c]
        comp[:, 3], comp[:, 4], comp[:, 5] = bsx, bsy, bth
        out.append(comp)
    return out


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _bounds(
    seeds: F64, bbox: tuple[float, float, float, float], s: FitConfig
) -> tuple[F64, F64, F64, F64, F64]:
    # Start values and bounds of one unit (noise units for A), spec 6.4.
    k = seeds.shape[0]
    p0 = seeds.copy()
    lo = np.empty_like(p0)
    hi = np.empty_like(p0)
    amp = p0[:, 0]
    if s.ampl_limit is None:
        lo[:, 0], hi[:, 0] = 0.0, np.inf
    else:
        lo[:, 0] = np.maximum(amp * (1.0 - s.ampl_limit), 0.0)
        hi[:, 0] = amp * (1.0 + s.ampl_limit)
    xmin, xmax, ymin, ymax = bbox
    for col, (a, b) in ((1, (xmin, xmax)), (2, (ymin, ymax))):
        c = p0[:, col]
        if s.pos_limit is None:
            lo[:, col], hi[:, col] = a, b
        else:
            lo[:, col] = np.maximum(c - s.pos_limit, a)
            hi[:, col] = np.minimum(c + s.pos_limit, b)
        p0[:, col] = np.clip(c, lo[:, col], hi[:, col])
    sbox = max(xmax - xmin, ymax - ymin) * math.sqrt(2.0) / FWHM
    for col in (3, 4):
        sg = p0[:, col]
        if s.fix_sigma:
            lo[:, col] = hi[:, col] = sg
        elif s.sigma_limit is None:
            lo[:, col], hi[:, col] = MIN_SIGMA, np.inf
        else:
            lo[:, col] = np.maximum(sg * (1.0 - s.sigma_limit), MIN_SIGMA)
            hi[:, col] = np.maximum(sg * (1.0 + s.sigma_limit), sbox)
    th = p0[:, 5]
    if s.fix_theta:
        lo[:, 5] = hi[:, 5] = th
    elif s.theta_limit is None:
        lo[:, 5], hi[:, 5] = -np.inf, np.inf
    else:
        lo[:, 5], hi[:, 5] = th - s.theta_limit, th + s.theta_limit
    hlo = np.tile([0.0, xmin, ymin, MIN_SIGMA, MIN_SIGMA, -np.inf], (k, 1))
    hhi = np.tile([np.inf, xmax, ymax, np.inf, np.inf, np.inf], (k, 1))
    if s.fix_sigma:
        hlo[:, 3:5], hhi[:, 3:5] = lo[:, 3:5], hi[:, 3:5]
    if s.fix_theta:
        hlo[:, 5], hhi[:, 5] = lo[:, 5], hi[:, 5]
    p0f, lof, hif = p0.reshape(-1), lo.reshape(-1), hi.reshape(-1)
    hlof, hhif = hlo.reshape(-1), hhi.reshape(-1)
    if s.free_bkg:
        lim = 1.0 if s.bkg_limits else np.inf
        p0f = np.append(p0f, 0.0)
        lof = np.append(lof, -lim)
        hif = np.append(hif, lim)
        hlof = np.append(hlof, -np.inf)
        hhif = np.append(hhif, np.inf)
    assert p0f.size == NPAR * k + int(s.free_bkg)
    return p0f, lof, hif, hlof, hhif


def fit_units(units: Units, settings: FitConfig) -> FitResult:
    """Fit every unit; retry with fewer components when a fit fails (spec 6.4.5).

    Parameters
    ----------
    units
        Pixels and start components.
    settings
        Fit settings.

    Returns
    -------
    FitResult
        Components of the converged fits (units whose fit failed have ``fitted`` False and no
        component).
    """
    pix = units.pix
    nu = pix.n
    npix = np.diff(pix.offsets)
    sub = (pix.flux - pix.bkg).astype(np.float64)
    noise = pix.rms_sum / np.maximum(npix, 1)
    if units.box_bkg is not None and units.box_rms is not None:
        use_box = np.isfinite(units.box_bkg) & np.isfinite(units.box_rms) & (units.box_rms > 0)
        # The box estimate replaces the per-pixel background map.
        shift = np.where(use_box, units.box_bkg - pix.bkg_sum / np.maximum(npix, 1), 0.0)
        sub = sub - np.repeat(shift, npix)
        noise = np.where(use_box, units.box_rms, noise)
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, 1.0)
    seeds = [s.copy() for s in units.seeds]
    ncomp = np.array([s.shape[0] for s in seeds], dtype=np.int64)
    out = _Outcomes.empty(nu)
    todo = np.arange(nu)
    while todo.size:
        failed: list[int] = []
        for k in np.unique(ncomp[todo]):
            grp = todo[ncomp[todo] == k]
            _fit_group(grp, int(k), pix, sub, noise, npix, seeds, settings, out)
            failed.extend(int(u) for u in grp if out.status[u] == NOT_CONVERGED)
        retry = [u for u in failed if settings.retry and ncomp[u] > 1]
        for u in retry:
            seeds[u] = seeds[u][:-1]
            ncomp[u] -= 1
        todo = np.array(sorted(retry), dtype=np.int64)
    split = _deblend(pix, sub, noise, npix, ncomp, seeds, settings, out)
    point = _point_models(pix, sub, noise, npix, ncomp, settings, out)
    res = _collect(units, settings, seeds, ncomp, out, noise, npix)
    res.point_model = point
    res.deblended = split
    return res


#: Blend test: a one-component fit is a candidate when its major sigma exceeds the beam's
#: along the same direction by this factor (an unresolved source's fit stays near 1).
DEBLEND_MIN_STRETCH = 1.15
#: ... and each component of the pair kept must be no wider than this times the beam.
DEBLEND_MAX_WIDTH = 1.5


def _pair_seeds(p: F64, beam_sigma: tuple[float, float, float]) -> F64:
    """Two beam-shaped start components that a one-component fit ``p`` may hide.

    Two point sources of equal flux ``D`` apart along the major axis stretch the beam's
    variance along it by ``D**2 / 4``: the pair starts at ``+-D/2`` from the fitted centre with
    half of the fitted flux each.
    """
    a, x, y, sx, sy, th = (float(v) for v in p[:NPAR])
    bsx, bsy, bth = beam_sigma
    phi = th if sx >= sy else th + math.pi / 2
    smaj = max(sx, sy)
    sb2 = (bsx * math.cos(phi - bth)) ** 2 + (bsy * math.sin(phi - bth)) ** 2
    half = math.sqrt(max(smaj * smaj - sb2, 0.25 * sb2))
    amp = a * sx * sy / (2.0 * bsx * bsy)
    dx, dy = half * math.cos(phi), half * math.sin(phi)
    return np.array([[amp, x + dx, y + dy, bsx, bsy, bth], [amp, x - dx, y - dy, bsx, bsy, bth]])


def _stretched(p: F64, beam_sigma: tuple[float, float, float]) -> bool:
    # Stretched along one axis only, as a pair of point sources is: the fitted major sigma
    # beyond the beam's along the same direction, the minor one not beyond the beam's.
    sx, sy, th = (float(v) for v in p[3:6])
    bsx, bsy, bth = beam_sigma
    phi = th if sx >= sy else th + math.pi / 2
    along = math.hypot(bsx * math.cos(phi - bth), bsy * math.sin(phi - bth))
    across = math.hypot(bsx * math.sin(phi - bth), bsy * math.cos(phi - bth))
    lim = DEBLEND_MIN_STRETCH
    return max(sx, sy) > lim * along and min(sx, sy) <= lim * across


def _deblend(
    pix: IslandSet,
    sub: F64,
    noise: F64,
    npix: I64,
    ncomp: I64,
    seeds: list[F64],
    settings: FitConfig,
    out: _Outcomes,
) -> B:
    """Split one-component fits that a blended pair of point sources explains better.

    A blended pair closer than about one beam FWHM shows a single peak, so the seeding gives
    it one component, stretched along the pair's axis. Every converged one-component fit
    stretched beyond :data:`DEBLEND_MIN_STRETCH` times the beam is fitted again with two
    beam-shaped components (:func:`_pair_seeds`; amplitudes free, shapes within the sigma
    bounds). The pair replaces the single component when its effective chi2 gain (as for the
    point model: chi2 divided by ``CORRELATION_FACTOR`` times the beam area in pixels) is at
    least ``deblend_thr``, both components reach the secondary-peak significance
    ``peak_zthr``, they lie at least half a beam FWHM apart and neither is wider than
    :data:`DEBLEND_MAX_WIDTH` beams (a bright core in a faint halo is not a pair).

    Returns
    -------
    numpy.ndarray
        Per unit: whether the unit was split (its ``seeds`` and ``ncomp`` are updated).
    """
    nu = pix.n
    split = np.zeros(nu, dtype=bool)
    thr = settings.deblend_thr
    beam = settings.beam_sigma
    if thr is None or beam is None or settings.max_components < 2 or settings.fix_sigma:
        return split
    # Both components must reach peak_zthr: the pair's flux is at least twice that many beams.
    bright = 2.0 * settings.peak_zthr * noise
    cand = [
        int(u)
        for u in np.flatnonzero((out.status != NOT_CONVERGED) & (ncomp == 1))
        if _stretched(_first(out, int(u)), beam) and _beams(_first(out, int(u)), beam) >= bright[u]
    ]
    if not cand:
        return split
    trial: list[F64] = [np.zeros((0, NPAR))] * nu
    for u in cand:
        trial[u] = _pair_seeds(_first(out, u), beam)
    two = replace(settings, ampl_limit=None, widen=True)
    pair = _Outcomes.empty(nu)
    idx = np.array(cand, dtype=np.int64)
    _fit_group(idx, 2, pix, sub, noise, npix, trial, two, pair)
    scale = CORRELATION_FACTOR * max(settings.beam_area_pix, 1.0)
    bsig, bmaj = min(beam[0], beam[1]), max(beam[0], beam[1])
    for u in cand:
        p = pair.p[u]
        if pair.status[u] == NOT_CONVERGED or p is None:
            continue
        gain = (out.chi2[u] - pair.chi2[u]) / scale
        q = p[: 2 * NPAR].reshape(2, NPAR)
        sep = math.hypot(q[0, 1] - q[1, 1], q[0, 2] - q[1, 2])
        weak = float(q[:, 0].min()) / noise[u] < settings.peak_zthr
        # Two point sources: apart by half a beam FWHM at least, neither much wider than it.
        wide = float(np.abs(q[:, 3:5]).max()) > DEBLEND_MAX_WIDTH * bmaj
        if not np.isfinite(gain) or gain < thr or weak or wide or sep < 0.5 * FWHM * bsig:
            continue
        out.take(pair, np.array([u], dtype=np.int64))
        seeds[u] = trial[u]
        ncomp[u] = 2
        split[u] = True
    return split


def _beams(p: F64, beam_sigma: tuple[float, float, float]) -> float:
    # Integrated flux of a component in beam-peak units (Jy/beam x beams).
    return float(p[0] * p[3] * p[4] / (beam_sigma[0] * beam_sigma[1]))


def _first(out: _Outcomes, u: int) -> F64:
    p = out.p[u]
    assert p is not None
    return p[:NPAR]


@dataclass
class _Outcomes:
    """Per fit unit: parameters, covariance, chi2, status and positive-definiteness."""

    p: list[F64 | None]
    cov: list[F64 | None]
    chi2: F64
    status: I64
    posdef: B

    @classmethod
    def empty(cls, nu: int) -> _Outcomes:
        """``nu`` units, none fitted yet."""
        return cls(
            [None] * nu,
            [None] * nu,
            np.full(nu, np.nan),
            np.full(nu, NOT_CONVERGED, dtype=np.int64),
            np.zeros(nu, dtype=bool),
        )

    def take(self, other: _Outcomes, units: I64) -> None:
        """Replace the outcomes of ``units`` by those of ``other``."""
        for u in units:
            self.p[u], self.cov[u] = other.p[u], other.cov[u]
        self.chi2[units] = other.chi2[units]
        self.status[units] = other.status[units]
        self.posdef[units] = other.posdef[units]


def _fit_group(
    grp: I64,
    k: int,
    pix: IslandSet,
    sub: F64,
    noise: F64,
    npix: I64,
    seeds: list[F64],
    settings: FitConfig,
    out: _Outcomes,
) -> None:
    """Fit units with ``k`` components, in batches of similar size bounded in memory."""
    grp = grp[np.argsort(npix[grp], kind="stable")]
    npar = NPAR * k + int(settings.free_bkg)
    a = 0
    while a < grp.size:
        m = int(npix[grp[a]])
        b = a + 1
        while b < grp.size and b - a < 4096:
            m_next = int(npix[grp[b]])
            if (b - a + 1) * m_next * npar > BATCH_VALUES or m_next > 1.5 * m + 8:
                break
            m = m_next
            b += 1
        _fit_batch(grp[a:b], k, npar, pix, sub, noise, seeds, settings, out)
        a = b


def _point_models(
    pix: IslandSet,
    sub: F64,
    noise: F64,
    npix: I64,
    ncomp: I64,
    settings: FitConfig,
    out: _Outcomes,
) -> B:
    """Keep the beam-shaped model of single components whose shape the data do not constrain.

    Every converged one-component fit is fitted again with the beam's shape (amplitude and
    position free). Where the free shape lowers chi2 by less than ``point_model_thr`` in
    effective units (chi2 of beam-correlated pixels divided by ``CORRELATION_FACTOR`` times
    the beam area in pixels, so that the gain of the three shape parameters follows a chi2
    law with 3 degrees of freedom for a point source), the point model replaces the free fit
    in place: its integrated flux is the fitted peak, whose error is several times smaller
    than that of ``2 pi A sx sy`` at low signal-to-noise. The default threshold (11.34) is
    the 99th percentile of that law.

    Returns
    -------
    numpy.ndarray
        Per unit: whether the point model was kept.
    """
    nu = pix.n
    kept = np.zeros(nu, dtype=bool)
    thr = settings.point_model_thr
    if thr is None or settings.beam_sigma is None or settings.fix_sigma or settings.free_bkg:
        return kept
    cand = np.flatnonzero((out.status != NOT_CONVERGED) & (ncomp == 1))
    if cand.size == 0:
        return kept
    bsx, bsy, bth = settings.beam_sigma
    seeds: list[F64] = [np.zeros((0, NPAR))] * nu
    for u in cand:
        p = out.p[u]
        assert p is not None
        seeds[u] = np.array([[p[0], p[1], p[2], bsx, bsy, bth]])
    fixed = replace(
        settings, fix_sigma=True, fix_theta=True, ampl_limit=None, widen=True, free_bkg=False
    )
    point = _Outcomes.empty(nu)
    _fit_group(cand, 1, pix, sub, noise, npix, seeds, fixed, point)
    scale = CORRELATION_FACTOR * max(settings.beam_area_pix, 1.0)
    gain = (point.chi2[cand] - out.chi2[cand]) / scale
    use = cand[(point.status[cand] != NOT_CONVERGED) & np.isfinite(gain) & (gain < thr)]
    out.take(point, use)
    kept[use] = True
    return kept


def _fit_batch(
    batch: I64,
    k: int,
    npar: int,
    pix: IslandSet,
    sub: F64,
    noise: F64,
    seeds: list[F64],
    s: FitConfig,
    out: _Outcomes,
) -> None:
    n = batch.size
    npix = np.diff(pix.offsets)[batch]
    m = int(npix.max())
    x = np.zeros((n, m))
    y = np.zeros((n, m))
    v = np.zeros((n, m))
    wt = np.zeros((n, m))
    p0 = np.empty((n, npar))
    lo = np.empty((n, npar))
    hi = np.empty((n, npar))
    hlo = np.empty((n, npar))
    hhi = np.empty((n, npar))
    ref = np.empty((n, 2))
    for j, u in enumerate(batch):
        sl = pix.pixels(int(u))
        c = npix[j]
        # Coordinates relative to the weighted centroid keep the numbers small.
        rx, ry = pix.xw[u], pix.yw[u]
        ref[j] = rx, ry
        x[j, :c] = pix.xs[sl] - rx
        y[j, :c] = pix.ys[sl] - ry
        v[j, :c] = sub[sl] / noise[u]
        wt[j, :c] = 1.0
        sd = seeds[int(u)].copy()
        sd[:, 0] /= noise[u]
        sd[:, 1] -= rx
        sd[:, 2] -= ry
        bbox = (
            pix.xmin[u] - rx - 0.5,
            pix.xmax[u] - rx + 0.5,
            pix.ymin[u] - ry - 0.5,
            pix.ymax[u] - ry + 0.5,
        )
        p0[j], lo[j], hi[j], hlo[j], hhi[j] = _bounds(sd, bbox, s)
    res = lm_fit(
        x,
        y,
        v,
        wt,
        p0,
        lo,
        hi,
        k,
        max_iter=s.max_iters,
        tol=s.tol,
        widen=s.widen,
        n_widen=s.n_widen,
        widen_step=s.widen_step,
        hard_lo=hlo,
        hard_hi=hhi,
    )
    for j, u in enumerate(batch):
        p = res.params[j].copy()
        q = p[: NPAR * k].reshape(k, NPAR)
        q[:, 1] += ref[j, 0]
        q[:, 2] += ref[j, 1]
        q[:, 0] *= noise[u]
        q[:, 3:5] = np.abs(q[:, 3:5])
        if p.size > NPAR * k:
            p[-1] *= noise[u]
        # Amplitude-like parameters were fitted in noise units.
        scale = np.ones(npar)
        scale[0 : NPAR * k : NPAR] = noise[u]
        if p.size > NPAR * k:
            scale[-1] = noise[u]
        cov = res.cov[j] * np.outer(scale, scale)
        bad = ~np.all(q[:, 0] > 0) or not np.all(np.isfinite(p))
        out.p[u] = p
        out.cov[u] = cov
        out.chi2[u] = res.chi2[j]
        out.status[u] = NOT_CONVERGED if bad else res.status[j]
        out.posdef[u] = res.posdef[j]


def _collect(
    units: Units,
    s: FitConfig,
    seeds: list[F64],
    ncomp: I64,
    out: _Outcomes,
    noise: F64,
    npix: I64,
) -> FitResult:
    nu = units.pix.n
    chi2, status, posdef = out.chi2, out.status, out.posdef
    ok = status != NOT_CONVERGED
    nfree = np.array(
        [
            0 if p is None or c is None else int(np.count_nonzero(np.diag(c) > 0))
            for p, c in zip(out.p, out.cov, strict=True)
        ],
        dtype=np.int64,
    )
    ndf = np.maximum(npix - nfree, 1)
    redchi = chi2 / ndf
    quality = np.full(nu, QUALITY_BAD, dtype=np.int64)
    quality[ok] = QUALITY_MEDIUM
    quality[status == CONVERGED_AT_BOUND] = QUALITY_LOW
    high = (status == CONVERGED) & posdef
    if s.chi2_cut is not None:
        high &= redchi < s.chi2_cut
    quality[high] = QUALITY_HIGH
    area = s.beam_area_pix
    # Correlated noise inflates the variances; a poor model (chi2/ndf > 1) too.
    inflate = CORRELATION_FACTOR * max(area, 1.0) * np.maximum(np.nan_to_num(redchi, nan=1.0), 1.0)
    rows_unit: list[int] = []
    rows_comp: list[int] = []
    params: list[F64] = []
    errors: list[F64] = []
    flux: list[float] = []
    flux_err: list[float] = []
    offset = np.zeros(nu)
    ftot = np.full(nu, np.nan)
    ftot_err = np.full(nu, np.nan)
    for u in np.flatnonzero(ok):
        p = out.p[u]
        cov = out.cov[u]
        assert p is not None and cov is not None
        k = int(ncomp[u])
        cov = cov * inflate[u]
        q = p[: NPAR * k].reshape(k, NPAR)
        if p.size > NPAR * k:
            offset[u] = p[-1]
        dtot = np.zeros(p.size)
        for c in range(k):
            a, _, _, sx, sy, _ = q[c]
            b0 = NPAR * c
            blk = cov[b0 : b0 + NPAR, b0 : b0 + NPAR]
            f = 2.0 * math.pi * a * sx * sy
            d = np.array(
                [2 * math.pi * sx * sy, 0, 0, 2 * math.pi * a * sy, 2 * math.pi * a * sx, 0]
            )
            dtot[b0 : b0 + NPAR] = d
            rows_unit.append(int(u))
            rows_comp.append(c)
            params.append(q[c].copy())
            errors.append(np.sqrt(np.clip(np.diag(blk), 0.0, None)))
            flux.append(f / area)
            flux_err.append(math.sqrt(max(float(d @ blk @ d), 0.0)) / area)
        ftot[u] = float(sum(2 * math.pi * qq[0] * qq[3] * qq[4] for qq in q)) / area
        ftot_err[u] = math.sqrt(max(float(dtot @ cov @ dtot), 0.0)) / area
    nrow = len(rows_unit)
    return FitResult(
        unit=np.array(rows_unit, dtype=np.int64),
        comp=np.array(rows_comp, dtype=np.int64),
        params=np.array(params).reshape(nrow, NPAR),
        errors=np.array(errors).reshape(nrow, NPAR),
        flux=np.array(flux),
        flux_err=np.array(flux_err),
        chi2=chi2,
        ndf=ndf,
        status=status,
        quality=quality,
        ncomp=np.where(ok, ncomp, 0),
        offset=offset,
        noise=noise,
        flux_total=ftot,
        flux_total_err=ftot_err,
        fitted=ok,
    )
