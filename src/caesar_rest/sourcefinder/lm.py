"""The Gaussian model of the fits and its batched, bounded Levenberg-Marquardt solver.

:func:`gauss_model` gives a sum of elliptical Gaussians (plus an optional offset) and its
analytic Jacobian for a batch of units; :func:`lm_fit` minimises the chi2 of many units at once
with NumPy arrays of shape ``(units, pixels, parameters)`` (spec 6.4: bounds, widening of the
bounds a parameter runs into).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from caesar_rest.sourcefinder._types import F64, I64, B

NPAR = 6  # A, x0, y0, sigma_x, sigma_y, theta
#: Fit status codes.
CONVERGED, CONVERGED_AT_BOUND, NOT_CONVERGED = 0, 1, 2


# --------------------------------------------------------------------------------------------
# Model and Jacobian
# --------------------------------------------------------------------------------------------


@dataclass
class _Terms:
    """The model of a batch of units and the terms its Jacobian is made of (see
    :func:`_terms`); :meth:`rows` selects units, so that a step's accepted units get their
    Jacobian from the terms of the trial that accepted them instead of a second evaluation."""

    model: F64
    g: F64
    ag: F64
    u: F64
    w: F64
    c: F64
    s: F64
    isx2: F64
    isy2: F64
    sx: F64
    sy: F64
    npar: int

    def rows(self, keep: npt.NDArray[np.bool_]) -> _Terms:
        """The terms of the units flagged in ``keep``."""
        return _Terms(
            self.model[keep],
            self.g[keep],
            self.ag[keep],
            self.u[keep],
            self.w[keep],
            self.c[keep],
            self.s[keep],
            self.isx2[keep],
            self.isy2[keep],
            self.sx[keep],
            self.sy[keep],
            self.npar,
        )


def _terms(x: F64, y: F64, p: F64, ncomp: int) -> _Terms:
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
    if p.shape[1] > NPAR * ncomp:
        model = model + p[:, -1:]
    return _Terms(model, g, ag, u, w, c, s, isx2, isy2, sx, sy, p.shape[1])


def _jacobian(t: _Terms) -> F64:
    n, ncomp, m = t.g.shape
    jac = np.empty((n, m, t.npar))
    # Each derivative is written whole, straight into its place in the (unit, pixel,
    # parameter) layout: d[:, :, k] is parameter k of every component, as (unit, comp, pixel).
    d = jac[:, :, : NPAR * ncomp].reshape(n, m, ncomp, NPAR).transpose(0, 2, 3, 1)
    ag, u, w, c, s, isx2, isy2 = t.ag, t.u, t.w, t.c, t.s, t.isx2, t.isy2
    agu = ag * u
    d[:, :, 0] = t.g
    np.multiply(ag, u * c * isx2 - w * s * isy2, out=d[:, :, 1])
    np.multiply(ag, u * s * isx2 + w * c * isy2, out=d[:, :, 2])
    np.divide(agu * u * isx2, t.sx, out=d[:, :, 3])
    np.divide(ag * w * w * isy2, t.sy, out=d[:, :, 4])
    np.multiply(agu * w, isy2 - isx2, out=d[:, :, 5])
    if t.npar > NPAR * ncomp:
        jac[:, :, -1] = 1.0
    return jac


def gauss_model(
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
    t = _terms(x, y, p, ncomp)
    return t.model, _jacobian(t) if jacobian else None


# --------------------------------------------------------------------------------------------
# Batched bounded Levenberg-Marquardt
# --------------------------------------------------------------------------------------------


@dataclass
class LMResult:
    """Result of :func:`lm_fit` (one row per unit)."""

    params: F64
    cov: F64
    chi2: F64
    status: I64
    n_iter: I64
    posdef: B


#: Pixels per unit from which :func:`_normal` forms ``J^T J`` unit by unit: NumPy's einsum
#: of one unit's ``(pixels, parameters)`` Jacobian is about twice as fast per value as the
#: batched one there (both sum the pixels in order: the same bits).
NORMAL_BY_UNIT_PIXELS = 64


def _normal(jac: F64, r: F64) -> tuple[F64, F64]:
    """The normal equations ``J^T J`` and ``J^T r`` of a batch (sums over the pixels in
    their order)."""
    n, m, npar = jac.shape
    if n > 1 and m >= NORMAL_BY_UNIT_PIXELS:
        jtj = np.empty((n, npar, npar))
        for i in range(n):
            np.einsum("mp,mq->pq", jac[i], jac[i], out=jtj[i], optimize=False)
    else:
        jtj = np.einsum("nmp,nmq->npq", jac, jac, optimize=False)
    g = np.einsum("nmp,nm->np", jac, r, optimize=False)
    return jtj, g


_A = TypeVar("_A", bound=npt.NDArray[Any])


def _rows(a: _A, idx: I64) -> _A:
    """Rows ``idx`` of ``a`` (a copy), or ``a`` itself when they are all its rows."""
    return a if idx.size == a.shape[0] else cast(_A, a[idx])


@dataclass
class _Active:
    """The state of the units still iterating (rows of the batch's arrays, in batch order):
    copies, or the batch's own arrays while every unit is active."""

    idx: I64
    x: F64
    y: F64
    v: F64
    wt: F64
    p: F64
    lo: F64
    hi: F64
    fixed: B
    chi2: F64
    jtj: F64
    g: F64
    lam: F64
    steps: I64

    @classmethod
    def of(
        cls,
        idx: I64,
        data: tuple[F64, F64, F64, F64],
        p: F64,
        lo: F64,
        hi: F64,
        fixed: B,
        chi2: F64,
        jtj: F64,
        g: F64,
    ) -> _Active:
        """Units ``idx`` of a batch (``data``: its x, y, v and wt), at damping 1e-3."""
        x, y, v, wt = (_rows(a, idx) for a in data)
        return cls(
            idx,
            x,
            y,
            v,
            wt,
            _rows(p, idx),
            _rows(lo, idx),
            _rows(hi, idx),
            _rows(fixed, idx),
            _rows(chi2, idx),
            _rows(jtj, idx),
            _rows(g, idx),
            np.full(idx.size, 1e-3),
            np.zeros(idx.size, dtype=np.int64),
        )

    def finish(self, rows: I64, p: F64, chi2: F64, jtj: F64, n_iter: I64) -> None:
        """Write the results of ``rows`` (positions among the active units) back into the
        batch's arrays and drop them."""
        at = self.idx[rows]
        p[at], chi2[at], jtj[at], n_iter[at] = (
            self.p[rows],
            self.chi2[rows],
            self.jtj[rows],
            self.steps[rows],
        )
        if rows.size == self.idx.size:
            self.idx = self.idx[:0]
            return
        keep = np.ones(self.idx.size, dtype=bool)
        keep[rows] = False
        for f in fields(self):  # every array has a row per active unit
            setattr(self, f.name, getattr(self, f.name)[keep])


def lm_fit(
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
    status = np.full(n, NOT_CONVERGED, dtype=np.int64)
    n_iter = np.zeros(n, dtype=np.int64)
    n_wide = np.zeros(n, dtype=np.int64)
    model, jac = gauss_model(x, y, p, ncomp)
    assert jac is not None
    r = (v - model) * wt
    jac *= wt[:, :, None]
    chi2 = np.einsum("nm,nm->n", r, r)
    jtj, g = _normal(jac, r)
    idx = np.flatnonzero(np.isfinite(chi2))
    # The active units' state, compacted when units finish (their results written back then)
    # instead of indexed at every step.
    st = _Active.of(idx, (x, y, v, wt), p, lo, hi, fixed, chi2, jtj, g)
    eye = np.eye(npar)
    diag = np.arange(npar)
    for _ in range(max_iter):
        if st.idx.size == 0:
            break
        st.steps += 1
        d = st.jtj.diagonal(axis1=1, axis2=2)
        scale = np.maximum(d, 1e-12 * np.maximum(d.max(axis=1, keepdims=True), 1e-30))
        aa = st.jtj + (st.lam[:, None] * scale)[:, :, None] * eye
        gg = st.g.copy()
        # Active set: a parameter on a bound that the gradient pushes outwards sits out this
        # step, so the others take full steps instead of crawling along the bound.
        pi, li, hi_ = st.p, st.lo, st.hi
        eps = 1e-9 * (np.abs(pi) + 1.0)
        fx = st.fixed | ((pi <= li + eps) & (gg < 0)) | ((pi >= hi_ - eps) & (gg > 0))
        # Fixed parameters: identity rows/columns and no step.
        aa = np.where(fx[:, :, None] | fx[:, None, :], 0.0, aa)
        aa[:, diag, diag] = np.where(fx, 1.0, aa[:, diag, diag])
        gg[fx] = 0.0
        try:
            dp = np.linalg.solve(aa, gg[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            dp = np.einsum("npq,nq->np", np.linalg.pinv(aa), gg)
        pn = (pi + dp).clip(li, hi_)
        trial = _terms(st.x, st.y, pn, ncomp)
        rn = (st.v - trial.model) * st.wt
        chi2n = np.einsum("nm,nm->n", rn, rn)
        better = np.isfinite(chi2n) & (chi2n <= st.chi2)
        gain = st.chi2 - chi2n
        st.lam = np.where(better, np.maximum(st.lam / 10.0, 1e-9), st.lam * 10.0)
        stalled = ~better & (st.lam > 1e10)
        every = bool(better.all())
        if every or better.any():
            np.copyto(pi, pn, where=better[:, None])
            np.copyto(st.chi2, chi2n, where=better)
            # The accepted units' Jacobian at their new parameters: from the trial's terms.
            jb = _jacobian(trial if every else trial.rows(better))
            jb *= (st.wt if every else st.wt[better])[:, :, None]
            if every:
                st.jtj, st.g = _normal(jb, rn)
            else:
                st.jtj[better], st.g[better] = _normal(jb, rn[better])
        small_step = (np.abs(dp) <= 1e-6 * (np.abs(pi) + 1e-3)).all(axis=1)
        # Converged: chi2 gain below tol (absolute, as Minuit's EDM) or 1e-4 relative (bright
        # non-Gaussian sources have a huge chi2 that creeps down for ever).
        conv = better & ((gain < tol) | (gain < 1e-4 * st.chi2) | small_step)
        done = np.flatnonzero(conv | stalled)
        if done.size == 0:
            continue
        # Converged units: any free parameter sitting on a finite bound?
        dlo, dhi, dpar, dfix = st.lo[done], st.hi[done], pi[done], st.fixed[done]
        span = dhi - dlo
        tol_b = 1e-6 * np.where(np.isfinite(span), span, 1.0) + 1e-12
        at_lo = np.isfinite(dlo) & (dpar - dlo <= tol_b) & ~dfix
        at_hi = np.isfinite(dhi) & (dhi - dpar <= tol_b) & ~dfix
        at_b = at_lo | at_hi
        bounded = cast(B, at_b.any(axis=1))
        can_widen = bounded & widen & (n_wide[st.idx[done]] < n_widen)
        wd = done[can_widen]
        if wd.size:
            gw = st.idx[wd]
            n_wide[gw] += 1
            k = (n_wide[gw] + 1)[:, None] * widen_step
            sp = span[can_widen]
            sp = np.where(np.isfinite(sp) & (sp > 0), sp, np.abs(pi[wd]) + 1.0)
            grow = k * sp / 2.0
            sel = at_b[can_widen]
            st.lo[wd] = np.where(sel, st.lo[wd] - grow, st.lo[wd])
            st.hi[wd] = np.where(sel, st.hi[wd] + grow, st.hi[wd])
            if hard_lo is not None:
                st.lo[wd] = np.maximum(st.lo[wd], hard_lo[gw])
            if hard_hi is not None:
                st.hi[wd] = np.minimum(st.hi[wd], hard_hi[gw])
            st.lam[wd] = 1e-3
        fin = done[~can_widen]
        if fin.size:
            status[st.idx[fin]] = np.where(bounded[~can_widen], CONVERGED_AT_BOUND, CONVERGED)
            st.finish(fin, p, chi2, jtj, n_iter)
    st.finish(np.arange(st.idx.size), p, chi2, jtj, n_iter)
    # Covariance at the solution (free parameters only).
    a = jtj.copy()
    a = np.where(fixed[:, None, :] | fixed[:, :, None], 0.0, a)
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
