"""The bounded Levenberg-Marquardt solver of :mod:`caesar_rest.sourcefinder.lm` as it was
before its steps reused the trial's terms (commit a49edcd), kept verbatim: the tests compare
the solver's results with it bit for bit."""

from __future__ import annotations

import numpy as np

from caesar_rest.sourcefinder._types import F64
from caesar_rest.sourcefinder.lm import (
    CONVERGED,
    CONVERGED_AT_BOUND,
    NOT_CONVERGED,
    NPAR,
    LMResult,
)


def reference_gauss_model(
    x: F64, y: F64, p: F64, ncomp: int, jacobian: bool = True
) -> tuple[F64, F64 | None]:
    """Sum of elliptical Gaussians (plus an optional offset) and its Jacobian.

    Parameters
    ----------
    x, y
        ``(n, m)`` pixel coordinates.
    p
        ``(n, 6*ncomp [+1])`` parameters; a trailing extra column is a constant offset.
    ncomp
        Components per unit.
    jacobian
        Whether to compute the Jacobian.

    Returns
    -------
    model, jac
        ``(n, m)`` model and ``(n, m, P)`` derivatives (None if not asked).
    """
    n, m = x.shape
    q = p[:, : NPAR * ncomp].reshape(n, ncomp, NPAR)
    amp, x0, y0 = q[:, :, 0:1], q[:, :, 1:2], q[:, :, 2:3]
    sx, sy, th = q[:, :, 3:4], q[:, :, 4:5], q[:, :, 5:6]
    dx = x[:, None, :] - x0
    dy = y[:, None, :] - y0
    c, s = np.cos(th), np.sin(th)
    u = dx * c + dy * s
    w = -dx * s + dy * c
    isx2 = 1.0 / (sx * sx)
    isy2 = 1.0 / (sy * sy)
    g = np.exp(-0.5 * (u * u * isx2 + w * w * isy2))
    ag = amp * g
    model = ag.sum(axis=1)
    offset = p.shape[1] > NPAR * ncomp
    if offset:
        model = model + p[:, -1:]
    if not jacobian:
        return model, None
    npar = p.shape[1]
    jac = np.empty((n, m, npar))
    jk = jac[:, :, : NPAR * ncomp].reshape(n, m, ncomp, NPAR)
    jk[..., 0] = np.swapaxes(g, 1, 2)
    jk[..., 1] = np.swapaxes(ag * (u * c * isx2 - w * s * isy2), 1, 2)
    jk[..., 2] = np.swapaxes(ag * (u * s * isx2 + w * c * isy2), 1, 2)
    jk[..., 3] = np.swapaxes(ag * u * u * isx2 / sx, 1, 2)
    jk[..., 4] = np.swapaxes(ag * w * w * isy2 / sy, 1, 2)
    jk[..., 5] = np.swapaxes(ag * u * w * (isy2 - isx2), 1, 2)
    if offset:
        jac[:, :, -1] = 1.0
    return model, jac


def _normal(jac: F64, r: F64) -> tuple[F64, F64]:
    jtj = np.einsum("nmp,nmq->npq", jac, jac, optimize=False)
    g = np.einsum("nmp,nm->np", jac, r, optimize=False)
    return jtj, g


def reference_lm_fit(
    x: F64,
    y: F64,
    v: F64,
    wt: F64,
    p0: F64,
    lo: F64,
    hi: F64,
    ncomp: int,
    max_iter: int = 200,
    tol: float = 1e-3,
    widen: bool = True,
    n_widen: int = 10,
    widen_step: float = 0.1,
    hard_lo: F64 | None = None,
    hard_hi: F64 | None = None,
) -> LMResult:
    """Fit ``v ~ model(p)`` for a batch of units by bounded Levenberg-Marquardt.

    Parameters
    ----------
    x, y, v
        ``(n, m)`` coordinates and data in noise units (padding anywhere where ``wt`` is 0).
    wt
        ``(n, m)`` 1 for data pixels, 0 for padding.
    p0, lo, hi
        ``(n, P)`` start values and bounds (``lo == hi`` fixes a parameter; +-inf allowed).
    ncomp
        Gaussian components per unit.
    max_iter
        Iteration cap per unit.
    tol
        Convergence: an accepted step lowering chi2 by less than this.
    widen
        Widen the bounds a converged parameter sits on and continue (spec 6.4).
    n_widen
        Maximum number of widenings per unit.
    widen_step
        Widening per round, as a fraction of half the bound range, times the round number.
    hard_lo, hard_hi
        Limits no widening may cross (e.g. centroids stay in the island's bounding box).

    Returns
    -------
    LMResult
        Parameters, covariance ``(J^T J)^-1`` (fixed parameters have zero rows), chi2,
        status (:data:`CONVERGED`, :data:`CONVERGED_AT_BOUND` or :data:`NOT_CONVERGED`),
        iterations, and whether the covariance is positive definite.
    """
    n, npar = p0.shape
    p = np.clip(p0.astype(np.float64), lo, hi)
    lo = lo.astype(np.float64).copy()
    hi = hi.astype(np.float64).copy()
    fixed = lo >= hi
    lam = np.full(n, 1e-3)
    status = np.full(n, NOT_CONVERGED, dtype=np.int64)
    n_iter = np.zeros(n, dtype=np.int64)
    n_wide = np.zeros(n, dtype=np.int64)
    model, jac = reference_gauss_model(x, y, p, ncomp)
    assert jac is not None
    r = (v - model) * wt
    jac *= wt[:, :, None]
    chi2 = np.einsum("nm,nm->n", r, r)
    jtj, g = _normal(jac, r)
    active = np.isfinite(chi2)
    eye = np.eye(npar)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        n_iter[idx] += 1
        a = jtj[idx]
        d = np.einsum("npp->np", a)
        scale = np.maximum(d, 1e-12 * np.maximum(d.max(axis=1, keepdims=True), 1e-30))
        aa = a + (lam[idx, None] * scale)[:, :, None] * eye
        gg = g[idx].copy()
        # Active set: a parameter on a bound that the gradient pushes outwards sits out this
        # step, so the others take full steps instead of crawling along the bound.
        pi, li, hi_ = p[idx], lo[idx], hi[idx]
        eps = 1e-9 * (np.abs(pi) + 1.0)
        fx = fixed[idx] | ((pi <= li + eps) & (gg < 0)) | ((pi >= hi_ - eps) & (gg > 0))
        # Fixed parameters: identity rows/columns and no step.
        aa[fx] = 0.0
        aa = np.where(fx[:, None, :], 0.0, aa)
        aa[:, np.arange(npar), np.arange(npar)] = np.where(
            fx, 1.0, aa[:, np.arange(npar), np.arange(npar)]
        )
        gg[fx] = 0.0
        try:
            dp = np.linalg.solve(aa, gg[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            dp = np.einsum("npq,nq->np", np.linalg.pinv(aa), gg)
        pn = np.clip(p[idx] + dp, lo[idx], hi[idx])
        mn, _ = reference_gauss_model(x[idx], y[idx], pn, ncomp, jacobian=False)
        rn = (v[idx] - mn) * wt[idx]
        chi2n = np.einsum("nm,nm->n", rn, rn)
        better = np.isfinite(chi2n) & (chi2n <= chi2[idx])
        gain = chi2[idx] - chi2n
        ib = idx[better]
        iw = idx[~better]
        lam[ib] = np.maximum(lam[ib] / 10.0, 1e-9)
        lam[iw] = lam[iw] * 10.0
        stalled = iw[lam[iw] > 1e10]
        if ib.size:
            p[ib] = pn[better]
            chi2[ib] = chi2n[better]
            mb, jb = reference_gauss_model(x[ib], y[ib], p[ib], ncomp)
            assert jb is not None
            rb = (v[ib] - mb) * wt[ib]
            jb *= wt[ib][:, :, None]
            jtj[ib], g[ib] = _normal(jb, rb)
        small_step = np.all(np.abs(dp[better]) <= 1e-6 * (np.abs(p[ib]) + 1e-3), axis=1)
        # Converged: chi2 gain below tol (absolute, as Minuit's EDM) or 1e-4 relative (bright
        # non-Gaussian sources have a huge chi2 that creeps down for ever).
        conv = (gain[better] < tol) | (gain[better] < 1e-4 * chi2[ib]) | small_step
        done = np.concatenate([ib[conv], stalled])
        if done.size == 0:
            continue
        done = np.unique(done)
        # Converged units: any free parameter sitting on a finite bound?
        span = hi[done] - lo[done]
        tol_b = 1e-6 * np.where(np.isfinite(span), span, 1.0) + 1e-12
        at_lo = np.isfinite(lo[done]) & (p[done] - lo[done] <= tol_b) & ~fixed[done]
        at_hi = np.isfinite(hi[done]) & (hi[done] - p[done] <= tol_b) & ~fixed[done]
        at_b = at_lo | at_hi
        bounded = at_b.any(axis=1)
        can_widen = bounded & widen & (n_wide[done] < n_widen)
        wd = done[can_widen]
        if wd.size:
            n_wide[wd] += 1
            k = (n_wide[wd] + 1)[:, None] * widen_step
            sp = span[can_widen]
            sp = np.where(np.isfinite(sp) & (sp > 0), sp, np.abs(p[wd]) + 1.0)
            grow = k * sp / 2.0
            sel = at_b[can_widen]
            lo[wd] = np.where(sel, lo[wd] - grow, lo[wd])
            hi[wd] = np.where(sel, hi[wd] + grow, hi[wd])
            if hard_lo is not None:
                lo[wd] = np.maximum(lo[wd], hard_lo[wd])
            if hard_hi is not None:
                hi[wd] = np.minimum(hi[wd], hard_hi[wd])
            lam[wd] = 1e-3
        fin = done[~can_widen]
        status[fin] = np.where(bounded[~can_widen], CONVERGED_AT_BOUND, CONVERGED)
        active[fin] = False
    # Covariance at the solution (free parameters only).
    a = jtj.copy()
    a = np.where(fixed[:, None, :] | fixed[:, :, None], 0.0, a)
    diag = np.arange(npar)
    a[:, diag, diag] = np.where(fixed, 1.0, a[:, diag, diag])
    try:
        cov = np.linalg.inv(a)
        posdef = np.all(np.linalg.eigvalsh(a) > 0, axis=1)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(a)
        posdef = np.zeros(n, dtype=bool)
    cov = np.where(fixed[:, None, :] | fixed[:, :, None], 0.0, cov)
    bad = ~np.isfinite(p).all(axis=1) | ~np.isfinite(chi2)
    status[bad] = NOT_CONVERGED
    cov64: F64 = np.asarray(cov, dtype=np.float64)
    ok = posdef & np.isfinite(cov64).all(axis=(1, 2))
    return LMResult(p, cov64, chi2, status, n_iter, ok)
