"""Exactness of the background's shortcuts: the float32 clipped estimator (its complex
prefix sums, reused work arrays), the band interpolation and the partial second estimate of
an image with masked sources (issue 19)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from caesar_rest.sourcefinder import background


def _clipped_float64(v: npt.NDArray[np.float64], k: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    # The earlier implementation (float64 sort, full comparisons each iteration), kept as
    # the reference the faster one must equal bit for bit.
    srt = np.sort(v, axis=1)
    nrow, ncol = srt.shape
    lo = np.zeros(nrow, dtype=np.int64)
    hi = np.count_nonzero(np.isfinite(srt), axis=1).astype(np.int64)
    rows = np.arange(nrow)

    def median(r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        n = b - a
        i = np.clip(a + (n - 1) // 2, 0, ncol - 1)
        j = np.clip(a + n // 2, 0, ncol - 1)
        return np.where(n > 0, 0.5 * (srt[r, i] + srt[r, j]), np.nan)

    med = median(rows, lo, hi)
    c = np.where(np.isfinite(srt), srt - np.where(np.isfinite(med), med, 0.0)[:, None], 0.0)
    s1 = np.concatenate([np.zeros((nrow, 1)), np.cumsum(c, axis=1)], axis=1)
    s2 = np.concatenate([np.zeros((nrow, 1)), np.cumsum(c * c, axis=1)], axis=1)

    def std(r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        n = (b - a).astype(np.float64)
        t1 = s1[r, b] - s1[r, a]
        t2 = s2[r, b] - s2[r, a]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (t2 - t1 * t1 / n) / (n - 1.0)
        return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)

    sd = std(rows, lo, hi)
    active = np.isfinite(sd) & (sd > 0)
    for _ in range(100):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        a = (med[idx] - k * sd[idx])[:, None]
        b = (med[idx] + k * sd[idx])[:, None]
        new_lo = np.maximum(lo[idx], np.count_nonzero(srt[idx] <= a, axis=1))
        new_hi = np.minimum(hi[idx], np.count_nonzero(srt[idx] < b, axis=1))
        ok = new_hi - new_lo > 1
        oi, nlo, nhi = idx[ok], new_lo[ok], new_hi[ok]
        m2, s2_ = median(oi, nlo, nhi), std(oi, nlo, nhi)
        conv = np.abs(s2_ - sd[oi]) / np.maximum(sd[oi], 1e-300) <= 0.1
        med[oi], sd[oi], lo[oi], hi[oi] = m2, s2_, nlo, nhi
        active[oi[conv]] = False
        active[idx[~ok]] = False
    return med, sd


def _rows(seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((300, 400)).astype(np.float32)
    v[:, :8] += (40 * rng.random((300, 8))).astype(np.float32)  # sources
    v[::7, 30:200] = np.nan  # blanks
    v[3, 2:] = np.nan  # two values
    v[4] = np.nan  # none
    v[5] = 1.0  # constant
    v[6] = np.round(v[6] * 2) / 2  # ties at the clip bounds
    v[8, :5] = np.inf
    return v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clipped_rows_of_float32_equal_the_float64_reference(seed: int) -> None:
    v = _rows(seed)
    med, std = background._clipped_rows(v)
    ref_med, ref_std = _clipped_float64(v.astype(np.float64))
    assert np.array_equal(med, ref_med, equal_nan=True)
    assert np.array_equal(std, ref_std, equal_nan=True)
    # float64 rows take the same path.
    med64, std64 = background._clipped_rows(v.astype(np.float64))
    assert np.array_equal(med64, ref_med, equal_nan=True)
    assert np.array_equal(std64, ref_std, equal_nan=True)


def _field(n: int = 480, seed: int = 4) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 1.0, (n, n)) + np.linspace(0.0, 2.0, n)[None, :]
    yy, xx = np.mgrid[:n, :n]
    for x, y in rng.uniform(20, n - 20, (12, 2)):
        img += 40.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
    img[:, :9] = np.nan
    return img.astype(np.float32)


def _grids(bk: background.Background) -> tuple[np.ndarray, np.ndarray]:
    assert bk.grid_bkg is not None and bk.grid_rms is not None
    return bk.grid_bkg, bk.grid_rms


@pytest.mark.parametrize("estimator", ["ClippedMedian", "Median"])
@pytest.mark.parametrize("origin", [(0, 0), (37, 5)])
def test_second_estimate_of_masked_image_equals_a_fresh_one(
    estimator: str, origin: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    img = _field()
    full = (img.shape[0] + origin[1] + 11, img.shape[1] + origin[0] + 3)
    kw = dict(estimator=estimator, beam_width_px=3, origin=origin, full_shape=full)
    first = background.estimate(img, 60, 0.2, **kw)  # type: ignore[arg-type]
    masked = img.copy()
    masked[(img - first.bkg) / first.rms > 5.0] = np.nan
    # Count the boxes estimated again (the shortcut is taken, and saves work).
    done: list[int] = []
    real = background._box_stats

    def spy(*args: object, **kwargs: object) -> background._BoxPass:
        todo = args[5] if len(args) > 5 else kwargs.get("todo")
        if todo is not None:
            done.append(int(np.count_nonzero(todo)))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(background, "_box_stats", spy)
    again = background.estimate(masked, 60, 0.2, reuse=(first, img), **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(background, "_box_stats", real)
    fresh = background.estimate(masked, 60, 0.2, **kw)  # type: ignore[arg-type]
    assert len(done) == 2 and 0 < done[0] <= done[1]
    assert first.grid_bkg is not None and done[0] < first.grid_bkg.size
    for a, b in zip(_grids(again), _grids(fresh), strict=True):
        assert np.array_equal(a, b)
    assert (again.global_bkg, again.global_rms) == (fresh.global_bkg, fresh.global_rms)
    assert np.array_equal(again.rms, fresh.rms, equal_nan=True)
    assert np.array_equal(again.bkg, fresh.bkg, equal_nan=True)


def test_reuse_with_other_settings_estimates_every_box() -> None:
    img = _field(seed=6)
    first = background.estimate(img, 60, 0.2, "ClippedMedian", beam_width_px=3)
    masked = img.copy()
    masked[100:120, 100:120] = np.nan
    for kw in ({"estimator": "Median"}, {"second_pass": False}, {"grid_fraction": 0.25}):
        args = {"estimator": "ClippedMedian", "grid_fraction": 0.2, **kw}
        a = background.estimate(masked, 60, beam_width_px=3, reuse=(first, img), **args)  # type: ignore[arg-type]
        b = background.estimate(masked, 60, beam_width_px=3, **args)  # type: ignore[arg-type]
        for x, y in zip(_grids(a), _grids(b), strict=True):
            assert np.array_equal(x, y)


def test_unchanged_image_reuses_every_box() -> None:
    img = _field(seed=8)
    first = background.estimate(img, 60, 0.2, "ClippedMedian", beam_width_px=3)
    again = background.estimate(img, 60, 0.2, "ClippedMedian", beam_width_px=3, reuse=(first, img))
    for x, y in zip(_grids(again), _grids(first), strict=True):
        assert np.array_equal(x, y)


def test_clipped_rows_in_place_with_reused_scratch_equal_a_fresh_estimate() -> None:
    # One scratch for chunks of different sizes (the last chunk of a pass is smaller), the
    # rows sorted in place: the values of a fresh call on the untouched rows.
    scratch = background.Scratch()
    for seed, rows in ((0, 300), (1, 120), (2, 300)):
        v = _rows(seed)[:rows]
        ref_med, ref_std = _clipped_float64(v.astype(np.float64))
        work = v.copy()
        med, std = background._clipped_rows(work, scratch=scratch, overwrite_input=True)
        assert np.array_equal(med, ref_med, equal_nan=True)
        assert np.array_equal(std, ref_std, equal_nan=True)
        assert np.array_equal(work, np.sort(v, axis=1), equal_nan=True)


def test_clipped_rows_pinned_values() -> None:
    # The values of the code before the complex prefix sums (git main, 2026-12-03).
    med, std = background._clipped_rows(_rows(0)[:3])
    assert med.tolist() == [-0.21302872896194458, -0.018538814038038254, -0.038677625358104706]
    assert std.tolist() == [0.9611020501168044, 0.9830910414593987, 0.8951044175119401]


def test_band_interpolation_equals_gathered_rows() -> None:
    # Rows between the same two grid rows are made from those rows: the values of
    # gathering both grid rows for every image row (the earlier code), bit for bit.
    rng = np.random.default_rng(3)
    cx = np.arange(20, 300, 16)
    cy = np.arange(20, 220, 16)
    g = rng.standard_normal((cy.size, cx.size))
    it = background._AxisInterp(g, cx, cy, (240, 320))
    for y0, y1 in ((0, 240), (0, 1), (17, 18), (30, 101), (239, 240), (5, 5)):
        w = it.wy[y0:y1, None]
        ref = np.multiply(it.xrows[it.iy[y0:y1]], 1.0 - w)
        ref += it.xrows[it.iy[y0:y1] + 1] * w
        assert np.array_equal(it.rows(y0, y1), ref)
    assert float(it.rows(100, 101)[0, 100]) == -1.7300134897232056


@pytest.mark.parametrize("extra", [1, 3 * background.ROW_BLOCK + 7])
def test_clipped_long_row_with_block_sums_equals_the_reference(extra: int) -> None:
    # One long row (the global sample) keeps its prefix sums by blocks: the values of the
    # full prefix sums, with blanks, infinities and sources.
    rng = np.random.default_rng(extra)
    n = background.LONG_ROW + extra
    v = rng.standard_normal((1, n)).astype(np.float32)
    v[0, : n // 40] += (60 * rng.random(n // 40)).astype(np.float32)
    v[0, ::9] = np.nan
    v[0, 3:6] = np.inf
    ref_med, ref_std = _clipped_float64(v.astype(np.float64))
    for work in (v.copy(), v.astype(np.float64)):
        med, std = background._clipped_rows(work, overwrite_input=True)
        assert np.array_equal(med, ref_med) and np.array_equal(std, ref_std)
    assert n > background.LONG_ROW and np.isfinite(ref_std).all()
