"""Unit tests of each step of the source finder on small synthetic images with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caesar_rest.sourcefinder import (
    background,
    detection,
    extended,
    fitting,
    from_legacy,
    islands,
    lm,
    nesting,
)
from caesar_rest.sourcefinder import selection as sel
from caesar_rest.sourcefinder.array import BeamPix, _map_medians, estimate_background
from caesar_rest.sourcefinder.catalogue import deconvolve
from caesar_rest.sourcefinder.tiling import merge_pieces

from tests.sourcefinder.sf_synth import BEAM_SIGMA, RMS, gaussian, noise, point_sources

# --------------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------------


def _gradient(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] / n
    return 3e-4 * (xx - 0.5) + 2e-4 * (yy - 0.5) + 1e-4 * np.sin(2 * np.pi * xx)


def test_noise_level_recovered_within_2_percent() -> None:
    n = 512
    img = (noise(n, 3) + _gradient(n)).astype(np.float32)
    bk = background.estimate(img, 80, 0.2, beam_width_px=4)
    assert bk.grid is not None and bk.grid.box == 80 and bk.grid.step == 16
    assert abs(float(np.median(bk.rms)) / RMS - 1.0) < 0.02
    # The gradient is followed to a fraction of the noise between the outer box centres
    # (beyond them the map is clamped, spec 2.3).
    inner = (slice(40, n - 40), slice(40, n - 40))
    assert float(np.max(np.abs(bk.bkg - _gradient(n))[inner])) < 0.5 * RMS
    assert bk.global_rms > 1.05 * RMS  # the global estimate is inflated by the gradient


def test_default_noise_in_a_crowded_field() -> None:
    # 200 point sources on 512^2 (3x the density of the finder benchmark's crowded field),
    # peaks 3-60 sigma drawn from dN/dS ~ S^-2: the sources inflate a Median/MAD box. The
    # default (3-sigma clipped boxes, detected sources masked and estimated again) is within
    # 1 % of the true noise, and its map scatters less.
    n = 512
    rng = np.random.default_rng(4)
    xy = rng.uniform(5, n - 5, (200, 2))
    peak = 3 * RMS / (1 - rng.uniform(0, 0.95, 200))
    srcs = [(float(x), float(y), float(p)) for (x, y), p in zip(xy, peak, strict=True)]
    img = point_sources(n, srcs, seed=4).astype(np.float32)
    beam = BeamPix(6.0, 6.0, 0.0, 2 * np.pi * BEAM_SIGMA**2, 4.0, 4.0, (BEAM_SIGMA,) * 2 + (0.0,))
    old = estimate_background(
        img, beam, from_legacy({"bkgestimator": "Median", "no-bkgskipoutliers": True})
    )
    new = estimate_background(img, beam, from_legacy({}))
    r_old, r_new = old.rms / RMS, new.rms / RMS
    assert float(np.median(r_old)) > 1.02
    assert abs(float(np.median(r_new)) - 1.0) < 0.01
    spread = [float(np.subtract(*np.percentile(r, [95, 5]))) for r in (r_old, r_new)]
    assert spread[1] < 0.8 * spread[0]
    assert float(np.median(new.bkg)) < float(np.median(old.bkg))


@pytest.mark.parametrize("estimator", ["Mean", "Median", "BiWeight", "ClippedMedian"])
def test_estimators_on_gaussian_values(estimator: str) -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(2.0, 3.0, size=(4, 4000))
    v[:, :20] = 1e3  # outliers: robust estimators must ignore them
    v[1, 100:200] = np.nan
    loc, scale, count = background.estimate_rows(v, estimator)
    assert count[1] == 3900
    if estimator == "Mean":
        assert np.all(loc > 5.0)
    else:
        assert np.allclose(loc, 2.0, atol=0.25)
        assert np.allclose(scale, 3.0, rtol=0.1)


def _clipped_reference(v: np.ndarray, k: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    # Spec 2.2.4 row by row, as written: clip around the median at k std until the std settles.
    med, std = np.full(v.shape[0], np.nan), np.full(v.shape[0], np.nan)
    for i, row in enumerate(v):
        keep = np.isfinite(row)
        if keep.sum() < 2:
            med[i] = np.median(row[keep]) if keep.any() else np.nan
            continue
        m, s = np.median(row[keep]), np.std(row[keep], ddof=1)
        for _ in range(100):
            if not s > 0:
                break
            new = keep & (np.abs(row - m) < k * s)
            if new.sum() < 2:
                break
            m2, s2 = np.median(row[new]), np.std(row[new], ddof=1)
            done = abs(s2 - s) / s <= 0.1
            m, s, keep = m2, s2, new
            if done:
                break
        med[i], std[i] = m, s
    return med, std


def test_clipped_estimator_equals_the_spec_loop() -> None:
    # The sorted-run implementation keeps the same values as clipping the rows directly.
    rng = np.random.default_rng(3)
    v = rng.standard_normal((200, 300))
    v[:, :6] += 30 * rng.random((200, 6))  # sources
    v[::5, 20:90] = np.nan  # blanks
    v[7, 1:] = np.nan
    med, std = background._clipped_rows(v.copy())
    ref_med, ref_std = _clipped_reference(v)
    assert np.allclose(med, ref_med, rtol=0, atol=1e-12, equal_nan=True)
    assert np.allclose(std, ref_std, rtol=1e-12, atol=0, equal_nan=True)


def test_nan_border_and_grid_alignment() -> None:
    n = 400
    img = noise(n, 5).astype(np.float32)
    img[:12] = np.nan
    img[:, -7:] = np.nan
    bk = background.estimate(img, 60, 0.2, beam_width_px=4)
    assert np.isnan(bk.bkg[:12]).all() and np.isnan(bk.rms[:, -7:]).all()
    assert np.isfinite(bk.rms[12:, :-7]).all() and (bk.rms[12:, :-7] > 0).all()
    # A tile with the same global alignment gives identical maps inside it.
    x0, y0 = 100, 80
    tile = np.ascontiguousarray(img[y0 : y0 + 260, x0 : x0 + 250])
    bt = background.estimate(tile, 60, 0.2, beam_width_px=4, origin=(x0, y0), full_shape=(n, n))
    core = (slice(90, 170), slice(90, 160))
    assert np.array_equal(bt.rms[core], bk.rms[y0 : y0 + 260, x0 : x0 + 250][core])
    assert np.array_equal(bt.bkg[core], bk.bkg[y0 : y0 + 260, x0 : x0 + 250][core])


def test_box_larger_than_image_gives_global() -> None:
    img = noise(64, 2).astype(np.float32)
    bk = background.estimate(img, 200, 0.2, beam_width_px=4)
    assert bk.grid is None and np.ptp(bk.rms) == 0.0


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def test_flood_fill_seed_merge_minpix_connectivity() -> None:
    z = np.zeros((20, 20), dtype=np.float32)
    z[2:5, 2:5] = 3.0
    z[3, 3] = 6.0  # seeded island of 9 px
    z[10:13, 10:13] = 3.0  # no seed: dropped
    z[15, 15] = z[15, 16] = 7.0  # seeded but 2 px < 5: dropped
    z[5, 5] = 3.0  # diagonal neighbour only: not part of the first island (4-connected)
    z[0, 19] = np.nan
    lab, n = detection.find_islands(z, 5.0, 2.6, 5)
    assert n == 1
    assert np.count_nonzero(lab == 1) == 9 and lab[5, 5] == 0


def test_iterations_find_fainter_sources() -> None:
    n = 128
    img = point_sources(n, [(40.0, 40.0, 30 * RMS), (90.0, 90.0, 4.8 * RMS)], seed=5)
    img = img.astype(np.float32)
    z = (img / RMS).astype(np.float32)

    def recompute(work: np.ndarray) -> np.ndarray:
        return (work / RMS).astype(np.float32)

    _, n1 = detection.iterative_search(img, z, 5.0, 2.6, 5, 1, 0.5, recompute)
    lab, n2 = detection.iterative_search(img, z, 5.0, 2.6, 5, 3, 0.5, recompute)
    assert n2 > n1 >= 1
    assert lab[90, 90] > 0


def test_islands_measurements() -> None:
    n = 64
    img = gaussian(n, 30.3, 20.7, 1e-2, 2.0, 2.0, 0.0).astype(np.float32)
    zero = np.zeros_like(img)
    lab = (img > 1e-3).astype(np.int32)
    isl = islands.from_labels(lab, img, zero, np.full_like(img, RMS), origin=(100, 200))
    assert isl.n == 1
    assert isl.xw[0] == pytest.approx(130.3, abs=0.05)
    assert isl.yw[0] == pytest.approx(220.7, abs=0.05)
    assert (isl.xpk[0], isl.ypk[0]) == (130, 221)
    assert isl.npix[0] == np.count_nonzero(lab)
    assert not isl.border[0]


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _fit_image(
    img: np.ndarray,
    max_comp: int = 3,
    point_thr: float | None = None,
    deblend_thr: float | None = None,
) -> tuple[islands.IslandSet, fitting.FitResult]:
    img = img.astype(np.float32)
    bk = background.estimate(img, 80, 0.2, beam_width_px=4)
    z = background.significance(img, bk.bkg, bk.rms)
    lab, _ = detection.find_islands(z, 5.0, 2.6, 5)
    isl = islands.from_labels(lab, img, bk.bkg, bk.rms)
    peaks = fitting.find_peaks(isl, isl.flux - isl.bkg)
    seeds = fitting.seed_components(isl, peaks, (BEAM_SIGMA, BEAM_SIGMA, 0.0), 5.0, max_comp)
    units = fitting.Units(isl, seeds)
    area = 2 * math.pi * BEAM_SIGMA**2
    settings = fitting.FitConfig(
        beam_area_pix=area,
        beam_sigma=(BEAM_SIGMA, BEAM_SIGMA, 0.0),
        point_model_thr=point_thr,
        deblend_thr=deblend_thr,
    )
    return isl, fitting.fit_units(units, settings)


def test_jacobian_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 5, (3, 40))
    y = rng.uniform(-5, 5, (3, 40))
    p = np.array([[2.0, 0.3, -0.2, 1.5, 2.5, 0.4, 1.0, 2.0, 1.0, 1.2, 1.1, -0.3, 0.1]] * 3)
    _, jac = lm.gauss_model(x, y, p, 2)
    assert jac is not None
    for k in range(p.shape[1]):
        dp = np.zeros_like(p)
        dp[:, k] = 1e-6
        mp, _ = lm.gauss_model(x, y, p + dp, 2, jacobian=False)
        mm, _ = lm.gauss_model(x, y, p - dp, 2, jacobian=False)
        assert np.allclose(jac[:, :, k], (mp - mm) / 2e-6, atol=1e-6)


def test_single_gaussian_fitted_within_errors() -> None:
    # An elliptical source at S/N 50: every parameter within 3 sigma of the truth.
    n = 160
    truth = dict(x=80.4, y=70.7, a=50 * RMS, sx=1.4 * BEAM_SIGMA, sy=BEAM_SIGMA, th=0.6)
    img = noise(n, 11) + gaussian(
        n, truth["x"], truth["y"], truth["a"], truth["sx"], truth["sy"], truth["th"]
    )
    isl, fit = _fit_image(img)
    assert fit.params.shape[0] == 1 and fit.quality[0] >= fitting.QUALITY_MEDIUM
    a, x, y, sx, sy, th = fit.params[0]
    ea, ex, ey, esx, esy, _ = fit.errors[0]
    assert abs(x - truth["x"]) < 3 * ex and abs(y - truth["y"]) < 3 * ey
    assert abs(a - truth["a"]) < 3 * ea
    assert abs(max(sx, sy) - truth["sx"]) < 3 * max(esx, esy) + 0.05
    true_flux = truth["a"] * 2 * math.pi * truth["sx"] * truth["sy"] / (2 * math.pi * BEAM_SIGMA**2)
    assert abs(fit.flux[0] - true_flux) < 3 * fit.flux_err[0]
    assert fit.flux_err[0] / fit.flux[0] < 0.1
    assert 0.3 < fit.chi2[0] / fit.ndf[0] < 3.0


def test_errors_match_scatter_over_noise_realisations() -> None:
    # The reported errors (with the correlated-noise correction) describe the real scatter.
    xs, exs = [], []
    for seed in range(12):
        img = point_sources(96, [(48.3, 47.6, 20 * RMS)], seed=seed)
        _, fit = _fit_image(img)
        xs.append(fit.params[0, 1])
        exs.append(fit.errors[0, 1])
    ratio = float(np.std(xs)) / float(np.median(exs))
    assert 0.5 < ratio < 2.0


def test_point_model_for_unresolved_sources_cuts_flux_scatter() -> None:
    # Point sources at S/N 12: the beam-shaped model is kept for most, and its integrated
    # fluxes scatter less than those of free-shape fits of the same images.
    truth = 12 * RMS  # peak = integrated flux for a point source (Jy)
    free, point, kept = [], [], []
    for seed in range(16):
        img = point_sources(96, [(48.3, 47.6, truth)], seed=100 + seed)
        _, f0 = _fit_image(img)
        _, f1 = _fit_image(img, point_thr=11.34)
        assert f0.point_model.sum() == 0
        free.append(f0.flux[0] / truth)
        point.append(f1.flux[0] / truth)
        kept.append(bool(f1.point_model[0]))
        if f1.point_model[0]:
            # Beam shape, and the integrated flux is the fitted peak.
            assert f1.params[0, 3] == pytest.approx(BEAM_SIGMA)
            assert f1.flux[0] == pytest.approx(f1.params[0, 0], rel=1e-9)
            assert 0 < f1.flux_err[0] < f0.flux_err[0]
    assert sum(kept) >= 12
    assert np.std(point) < 0.8 * np.std(free)
    assert abs(np.median(point) - 1.0) < 0.06


def test_point_model_not_used_for_resolved_source() -> None:
    # A source twice the beam at S/N 30 keeps its free-shape fit and its flux.
    n = 128
    sx = sy = 2 * BEAM_SIGMA
    img = noise(n, 5) + gaussian(n, 64.2, 63.7, 30 * RMS, sx, sy, 0.0)
    _, fit = _fit_image(img, point_thr=11.34)
    assert fit.params.shape[0] == 1 and not fit.point_model[0]
    true_flux = 30 * RMS * sx * sy / BEAM_SIGMA**2
    assert abs(fit.flux[0] - true_flux) < 3 * fit.flux_err[0]


def test_blended_pair_split_in_two() -> None:
    n = 128
    img = point_sources(n, [(60.0, 64.0, 40 * RMS), (68.0, 65.0, 25 * RMS)], seed=4)
    isl, fit = _fit_image(img)
    assert isl.n == 1  # one island ...
    assert fit.ncomp[0] == 2  # ... two components
    order = np.argsort(fit.params[:, 1])
    p = fit.params[order]
    assert np.allclose(p[:, 1], [60.0, 68.0], atol=0.3)
    assert np.allclose(p[:, 0] / RMS, [40, 25], rtol=0.15)


def test_single_peaked_blend_deblended_into_its_two_sources() -> None:
    # Two point sources 0.9 beam FWHM apart (3.6 px, one peak): one stretched component
    # without the blend test, the two sources with it (positions and fluxes of the truth).
    truth = [(22.0, 24.0, 100 * RMS), (24.8, 26.2, 50 * RMS)]
    img = point_sources(48, truth, seed=1)
    isl, one = _fit_image(img)
    assert isl.n == 1 and one.params.shape[0] == 1 and not one.deblended.any()
    assert one.params[0, 3] > 1.15 * BEAM_SIGMA  # stretched along the pair
    _, two = _fit_image(img, deblend_thr=22.46)
    assert two.ncomp[0] == 2 and two.deblended[0]
    p = two.params[np.argsort(-two.flux)]
    assert np.allclose(p[:, 1:3], [t[:2] for t in truth], atol=0.1)
    flux = two.flux[np.argsort(-two.flux)]
    assert np.allclose(flux / RMS, [100, 50], rtol=0.05)
    assert flux == pytest.approx([0.01015138, 0.0051795], rel=1e-5)  # this noise realisation
    # The single component took the pair's flux plus 2 % (its stretched wings).
    assert two.flux_total[0] == pytest.approx(one.flux_total[0] / 1.016, rel=1e-3)


def test_blend_test_leaves_single_sources_whole() -> None:
    # A point source, an elongated and a resolved one at S/N 20 and 100: never split.
    for seed in range(3):
        for sx, sy in ((1.0, 1.0), (2.0, 1.0), (2.0, 2.0)):
            for snr in (20, 100):
                img = noise(64, seed) + gaussian(
                    64, 31.3, 32.6, snr * RMS, sx * BEAM_SIGMA, sy * BEAM_SIGMA, 0.5
                )
                _, fit = _fit_image(img, deblend_thr=22.46)
                assert fit.params.shape[0] == 1 and not fit.deblended.any()


def test_deconvolution_recovers_intrinsic_size() -> None:
    # Gaussians add in quadrature along aligned axes.
    maj, mnr, pa = deconvolve(np.array([10.0]), np.array([6.0]), np.array([30.0]), 6.0, 6.0, 0.0)
    assert maj[0] == pytest.approx(8.0) and mnr[0] == pytest.approx(0.0, abs=1e-6)
    assert pa[0] == pytest.approx(30.0)
    maj, _, _ = deconvolve(np.array([6.0]), np.array([5.9]), np.array([0.0]), 6.0, 6.0, 0.0)
    assert maj[0] == 0.0  # unresolved


# --------------------------------------------------------------------------------------------
# Nested sources, selection, extended search, edge merging
# --------------------------------------------------------------------------------------------


def test_nested_blobs_in_large_island() -> None:
    n = 160
    img = noise(n, 9) + gaussian(n, 80, 80, 6 * RMS, 15, 10, 0.3)
    img += gaussian(n, 70, 78, 40 * RMS, BEAM_SIGMA, BEAM_SIGMA, 0)
    img += gaussian(n, 92, 84, 30 * RMS, BEAM_SIGMA, BEAM_SIGMA, 0)
    img = img.astype(np.float32)
    bk = background.estimate(img, 80, 0.2, beam_width_px=4)
    z = background.significance(img, bk.bkg, bk.rms)
    lab, nl = detection.find_islands(z, 5.0, 2.6, 5)
    isl = islands.from_labels(lab, img, bk.bkg, bk.rms)
    big = int(np.argmax(isl.npix))

    def read(x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        return img[max(y0, 0) : y1, max(x0, 0) : x1]

    scales = nesting.blob_scales(4.0, 1.0, 3.0, 1.0)
    assert scales == pytest.approx([4 / 2.35482 + i for i in range(4)], abs=1e-3)
    nested = nesting.nested_sources(
        isl, isl.npix > 100, read, (BEAM_SIGMA, BEAM_SIGMA, 0.0), scales
    )
    assert nested.n >= 2 and np.all(nested.parent == big)
    near = [np.min(np.hypot(nested.xw - x, nested.yw - y)) for x, y in ((70, 78), (92, 84))]
    assert max(near) < 3.0


def test_selection_removes_lines_and_tags_point_like() -> None:
    lab = np.zeros((40, 40), dtype=np.int32)
    lab[5, 5:30] = 1  # a one-pixel line
    yy, xx = np.mgrid[0:40, 0:40]
    lab[(xx - 25) ** 2 + (yy - 25) ** 2 <= 9] = 2  # a disc
    one = np.ones((40, 40), dtype=np.float32)
    isl = islands.from_labels(lab, one, 0 * one, one)
    good, morph = sel.select(isl, beam_area_pix=20.0)
    assert list(good) == [False, True]
    assert morph[1] == islands.MORPH_POINTLIKE
    sh = sel.shapes(isl)
    assert sh.circularity[1] > 0.6 and sh.elongation[0] > 0.9


def _extended_islands(search: np.ndarray) -> tuple[np.ndarray, int]:
    # The wavelet search as the pipeline runs it (scales 3..6, 5/2.6 sigma, 5 px), whole.
    f = extended.reduction(3)
    mask, _ = extended.wavelet_mask_reduced(
        extended.block_mean(search, f), search.shape, ~np.isfinite(search), 3, 6, 5.0, 2.6, False
    )
    return detection.label_mask(mask, 5)


def test_wavelet_finds_faint_extended_emission() -> None:
    n = 256
    img = noise(n, 21) + gaussian(n, 128, 128, 2.0 * RMS, 25, 18, 0.5)
    img = img.astype(np.float32)
    z = img / RMS
    _, ncomp = detection.find_islands(z, 5.0, 2.6, 5)
    assert ncomp == 0  # too faint per pixel for the compact search
    lab, n_ext = _extended_islands(img)
    assert n_ext == 1 and lab[128, 128] == 1
    # Pure noise gives nothing.
    _, n0 = _extended_islands(noise(n, 22).astype(np.float32))
    assert n0 == 0


def test_merge_pieces_across_tiles() -> None:
    lab = np.zeros((30, 30), dtype=np.int32)
    lab[10:20, 5:15] = 1
    img = np.ones((30, 30), dtype=np.float32)
    whole = islands.from_labels(lab, img, 0 * img, img)
    left = islands.from_labels(
        np.where(np.arange(30) < 11, lab, 0).astype(np.int32), img, 0 * img, img
    )
    right = islands.from_labels(
        np.where(np.arange(30) >= 9, lab, 0).astype(np.int32), img, 0 * img, img
    )
    far = islands.from_labels(
        np.pad(np.ones((3, 3), np.int32), ((25, 2), (25, 2))), img, 0 * img, img
    )
    merged = merge_pieces([left, right, far], (30, 30))
    assert merged.n == 2
    assert sorted(merged.npix.tolist()) == [9, int(whole.npix[0])]


@pytest.mark.parametrize("n", [900, 1500])
def test_map_medians_are_those_of_every_kth_valid_pixel_of_the_full_maps(n: int) -> None:
    # Above 2 million valid pixels only every k-th is read, from the grid at those pixels
    # (Background.at): the medians of the full maps' k-th valid pixels, bit for bit.
    rng = np.random.default_rng(n)
    img = (rng.standard_normal((n, n)) + np.linspace(0.0, 3.0, n)[None, :]).astype(np.float32)
    blank = np.zeros(img.shape, dtype=bool)
    blank[:37] = True
    blank[500:510, 100:800] = True
    img[blank] = np.nan
    bk = background.estimate(img, 120, 0.2, "Median", beam_width_px=4)
    valid = ~blank
    step = max(1, int(valid.sum()) // 1_000_000)
    assert step == (1 if n == 900 else 2)
    ref = (float(np.median(bk.bkg[valid][::step])), float(np.median(bk.rms[valid][::step])))
    got = _map_medians(bk, blank)
    assert got == ref
    assert got == pytest.approx((1.5, 1.0), abs=0.05)
