"""The saliency extended-source method (spec 5.2), its steps and its place in the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caesar_rest.sourcefinder import find_sources, from_legacy, saliency
from caesar_rest.sourcefinder.extended import block_mean
from caesar_rest.sourcefinder.options import ineffective_given

from tests.sourcefinder.sf_synth import RMS, gaussian, noise, write


def test_region_scores_single_out_the_odd_region() -> None:
    rng = np.random.default_rng(1)
    n = 60
    mu = rng.normal(10.0, 0.05, n)
    mu[17] = 14.0  # one region unlike every other
    cy, cx = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    s = saliency.region_scores(mu, cy, cx, nn_factor=1.0)
    assert int(np.argmin(s)) == 17
    # K smallest only: the odd region still scores lowest.
    assert int(np.argmin(saliency.region_scores(mu, cy, cx, nn_factor=0.2))) == 17


def test_region_scores_sampled_partners_follow_the_exact_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(2)
    n = 3000
    mu = np.concatenate([rng.normal(0.0, 1.0, n - 30), rng.normal(8.0, 0.5, 30)])
    cy, cx = rng.uniform(0, 500, n), rng.uniform(0, 500, n)
    exact = saliency.region_scores(mu, cy, cx, 0.5)
    monkeypatch.setattr(saliency, "MAX_PARTNERS", 500)
    sampled = saliency.region_scores(mu, cy, cx, 0.5)
    assert np.corrcoef(exact, sampled)[0, 1] > 0.97
    # The odd regions are the least like the others in both.
    assert set(np.argsort(sampled)[:30]) == set(range(n - 30, n))


def test_optimal_threshold_cuts_between_two_populations() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(20, 4, 20_000), rng.normal(200, 10, 500)])
    t = saliency.optimal_threshold(values.astype(np.float32), thr_factor=2.8)
    assert 45 < t < 180
    # The floor wins when it is higher than the histogram cut.
    assert saliency.optimal_threshold(values.astype(np.float32), thr_factor=9.0) == pytest.approx(
        9.0 * float(np.median(values)), rel=1e-3
    )


def test_guided_filter_smooths_flat_parts_and_keeps_edges() -> None:
    rng = np.random.default_rng(4)
    img = np.zeros((80, 80), dtype=np.float32)
    img[:, 40:] = 10.0
    noisy = (img + rng.normal(0, 0.5, img.shape)).astype(np.float32)
    use = np.ones(img.shape, dtype=bool)
    out = saliency.guided_filter(noisy, use, radius=3, eps=0.01)
    assert out[:, 5:30].std() < 0.5 * noisy[:, 5:30].std()
    # The step stays sharp: two pixels either side of it keep their levels.
    assert float(np.median(out[:, 38])) < 1.0 and float(np.median(out[:, 42])) > 9.0
    # Unused pixels are left alone, and do not pull their neighbours' means.
    use[:10] = False
    kept = saliency.guided_filter(noisy, use, radius=3, eps=0.01)
    np.testing.assert_array_equal(kept[:10], noisy[:10])
    assert abs(float(np.median(kept[10:13, 5:30]))) < 0.3
    # eps = 0 (allowed by the option) keeps flat windows as they are, never NaN.
    flat = img.copy()
    flat[:5] = np.nan
    out0 = saliency.guided_filter(flat, np.isfinite(flat), radius=3, eps=0.0)
    assert np.isfinite(out0[5:]).all()


def test_saliency_mask_finds_a_faint_extended_blob() -> None:
    n = 256
    blob = gaussian(n, 150, 100, 2.0 * RMS, 20, 12, 0.3)
    img = (noise(n, 21) + blob).astype(np.float32)
    small = block_mean(img, 4)
    blank = np.zeros(img.shape, dtype=bool)
    mask, sal = saliency.saliency_mask_reduced(
        small, img.shape, blank, 4, saliency.SaliencySettings()
    )
    assert mask.shape == img.shape and sal is not None and sal.shape == img.shape
    core = blob > 0.5 * blob.max()
    assert mask[core].mean() > 0.8  # most of the blob's core
    # The method flags some of the empty field too (its threshold is not in noise units).
    assert mask[blob < 0.01 * blob.max()].mean() < 0.25
    # No map when it is not wanted.
    _, none = saliency.saliency_mask_reduced(
        small, img.shape, blank, 4, saliency.SaliencySettings(), want_map=False
    )
    assert none is None


def test_pipeline_runs_the_method_asked_for(tmp_path: Path) -> None:
    n = 256
    blob = gaussian(n, 128, 128, 2.0 * RMS, 22, 16, 0.5)
    path = write(tmp_path / "blob.fits", noise(n, 31) + blob)
    found = {}
    for method in ("WT-THRESH", "SALIENCY-THRESH"):
        res = find_sources(path, from_legacy({"extsfinder": method}))
        isl = res.sources.isl
        top = np.flatnonzero(isl.parent < 0) if isl.parent.size else np.arange(len(isl.npix))
        hit = [
            int(i)
            for i in top
            if np.any(
                (isl.xs[isl.offsets[i] : isl.offsets[i + 1]] == 128)
                & (isl.ys[isl.offsets[i] : isl.offsets[i + 1]] == 128)
            )
        ]
        assert len(hit) == 1, method
        assert res.sources.stats["n_extended_regions"] >= 1, method
        found[method] = int(isl.npix[hit[0]])
    # Two different searches: the islands differ.
    assert found["WT-THRESH"] != found["SALIENCY-THRESH"]


def test_saliency_options_take_effect() -> None:
    opts = from_legacy(
        {
            "extsfinder": "SALIENCY-THRESH",
            "saliency-thr": 4.5,
            "saliency-minreso": 30,
            "saliency-maxreso": 20,  # below the minimum: raised to it
            "saliency-nooptimalthr": True,
            "no-presmoothing": True,
        }
    )
    assert opts.extended.method == "SALIENCY-THRESH" and opts.saliency.thr_factor == 4.5
    assert (opts.saliency.reso_min, opts.saliency.reso_max) == (30, 30)
    assert not opts.saliency.optimal_thr and opts.saliency.guided is None
    assert from_legacy({}).extended.method == "WT-THRESH"
    assert from_legacy({}).saliency.guided == (12.0, 0.04)
    # In effect with the saliency search; reported as without effect with the wavelet one.
    given = {"saliency-thr": 4.5, "guidedfilter-radius": 6.0}
    assert ineffective_given({"extsfinder": "SALIENCY-THRESH", **given}) == []
    assert ineffective_given(given) == ["guidedfilter-radius", "saliency-thr"]
    assert ineffective_given({"saliency-usebkgmap": True}) == ["saliency-usebkgmap"]
