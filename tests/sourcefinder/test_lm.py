"""The batched solver gives the bits of the solver before its steps reused the trial's terms
(tests/support/lm_reference.py), and its normal equations sum the pixels in order."""

from __future__ import annotations

import numpy as np
import pytest

from caesar_rest.sourcefinder import lm

from tests.support.lm_reference import reference_gauss_model, reference_lm_fit


def _batch(
    rng: np.random.Generator, n: int, m: int, k: int, offset: bool
) -> tuple[np.ndarray, ...]:
    """Units of ``k`` noisy Gaussians on padded pixel lists, start values off the truth,
    bounds as the fitter sets them (one parameter of a unit fixed)."""
    npar = lm.NPAR * k + int(offset)
    x = np.zeros((n, m))
    y = np.zeros((n, m))
    v = np.zeros((n, m))
    wt = np.zeros((n, m))
    p0 = np.empty((n, npar))
    for j in range(n):
        c = int(rng.integers(m // 2, m + 1))  # padding after the unit's pixels
        side = int(np.ceil(np.sqrt(c)))
        yy, xx = np.divmod(np.arange(c), side)
        x[j, :c], y[j, :c] = xx - side / 2, yy - side / 2
        truth = np.concatenate(
            [
                [rng.uniform(5, 50), *rng.uniform(-1, 1, 2), *rng.uniform(1, 2.5, 2), 0.3]
                for _ in range(k)
            ]
            + ([[0.2]] if offset else [])
        )
        model, _ = reference_gauss_model(x[j : j + 1, :c], y[j : j + 1, :c], truth[None], k)
        v[j, :c] = model[0] + rng.standard_normal(c)
        wt[j, :c] = 1.0
        p0[j] = truth * rng.uniform(0.8, 1.2, npar)
    lo = p0 - np.abs(p0) * 0.3
    hi = p0 + np.abs(p0) * 0.3
    lo[0, 5] = hi[0, 5] = p0[0, 5]  # a fixed angle
    hard_lo = lo - 2.0
    hard_hi = hi + 2.0
    return x, y, v, wt, p0, lo, hi, hard_lo, hard_hi


@pytest.mark.parametrize(
    ("n", "m", "k", "offset"),
    [
        (1, 40, 1, False),
        (9, 30, 1, False),
        (5, 120, 2, False),
        (3, 200, 3, False),
        (4, 80, 2, True),
    ],
)
def test_lm_fit_bits_equal_the_previous_solver(n: int, m: int, k: int, offset: bool) -> None:
    rng = np.random.default_rng(1000 * n + m + k)
    x, y, v, wt, p0, lo, hi, hard_lo, hard_hi = _batch(rng, n, m, k, offset)
    kw = {"max_iter": 200, "tol": 0.01, "hard_lo": hard_lo, "hard_hi": hard_hi}
    new = lm.lm_fit(x, y, v, wt, p0, lo, hi, k, **kw)  # type: ignore[arg-type]
    ref = reference_lm_fit(x, y, v, wt, p0, lo, hi, k, **kw)  # type: ignore[arg-type]
    assert int(new.n_iter.max()) >= 2  # the loop ran
    for name in ("params", "cov", "chi2", "status", "n_iter", "posdef"):
        a, b = getattr(new, name), getattr(ref, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name


def test_model_and_jacobian_bits_equal_the_previous_ones() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-5, 5, (2, 4, 50))
    p = rng.uniform(0.5, 3.0, (4, 2 * lm.NPAR + 1))
    model, jac = lm.gauss_model(x, y, p, 2)
    ref_model, ref_jac = reference_gauss_model(x, y, p, 2)
    assert jac is not None and ref_jac is not None
    assert model.tobytes() == ref_model.tobytes() and jac.tobytes() == ref_jac.tobytes()
    # A subset's Jacobian from the batch's terms: the bits of evaluating the subset again.
    keep = np.array([True, False, True, True])
    sub = lm._jacobian(lm._terms(x, y, p, 2).rows(keep))
    _, again = lm.gauss_model(x[keep], y[keep], p[keep], 2)
    assert again is not None and sub.tobytes() == again.tobytes()


@pytest.mark.parametrize("m", [lm.NORMAL_BY_UNIT_PIXELS - 1, lm.NORMAL_BY_UNIT_PIXELS, 301])
def test_normal_equations_sum_pixels_in_order(m: int) -> None:
    rng = np.random.default_rng(m)
    jac = rng.standard_normal((5, m, 12)) * rng.uniform(0.1, 100.0, (5, m, 1))
    r = rng.standard_normal((5, m))
    jtj, g = lm._normal(jac, r)
    want_jtj = np.zeros((5, 12, 12))
    want_g = np.zeros((5, 12))
    for i in range(m):  # the pixels one after the other, from zero
        want_jtj += jac[:, i, :, None] * jac[:, i, None, :]
        want_g += jac[:, i] * r[:, i, None]
    assert jtj.tobytes() == want_jtj.tobytes() and g.tobytes() == want_g.tobytes()
