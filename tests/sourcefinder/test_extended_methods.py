"""The active-contour (spec 5.4) and superpixel (spec 5.3) extended methods on small simulated
diffuse fields (``tests/support/diffuse_fields.py``), their options, and the refusal of
unknown methods."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caesar_rest.apps.base import OptionError
from caesar_rest.apps.caesar_app import CaesarApp
from caesar_rest.sourcefinder import activecontour, extended, find_sources, from_legacy, superpixel
from caesar_rest.sourcefinder.extended import block_mean
from caesar_rest.sourcefinder.options import ineffective_given

from tests.support import diffuse_fields as df

#: The field of every test: 384^2, 4 structures (shell, arc, blob, filament), 8 points.
N, SEED = 384, 2


@cache
def _field() -> df.Field:
    return df.make_field(N, 4, 8, SEED)


@cache
def _small() -> np.ndarray:
    # Block means (4 px, the default wtscalemin=3) of the field, as the pipeline gives the
    # methods (here without background: the simulated field has none).
    return block_mean(_field().image, 4)


def _contour_mask(**legacy: Any) -> np.ndarray:
    f = _field()
    opts = from_legacy({"extsfinder": "ACTIVE-CONTOUR", **legacy})
    mask, _ = activecontour.contour_mask_reduced(
        _small(), f.image.shape, np.zeros(f.image.shape, bool), opts, want_map=False
    )
    return mask


def _superpixel_mask(**legacy: Any) -> np.ndarray:
    f = _field()
    opts = from_legacy({"extsfinder": "SP-HIERCLUST", **legacy})
    mask, _ = superpixel.superpixel_mask_reduced(
        _small(), f.image.shape, np.zeros(f.image.shape, bool), opts, want_map=False
    )
    return mask


# --------------------------------------------------------------------------------------------
# The whole pipeline: each method finds the field's structures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "found", "regions"),
    [
        # Compact islands alone cover one structure (two with the predecessor's background,
        # bkgestimator=Median without bkgskipoutliers).
        ({"no-extendedsearch": True}, 1, 0),
        ({"extsfinder": "ACTIVE-CONTOUR"}, 4, 4),
        ({"extsfinder": "ACTIVE-CONTOUR", "activecontour": "LRAC"}, 4, 2),
        ({"extsfinder": "SP-HIERCLUST"}, 4, 3),
    ],
    ids=["none", "chan-vese", "lrac", "sp-hierclust"],
)
def test_each_method_finds_the_structures(
    tmp_path: Path, legacy: dict[str, Any], found: int, regions: int
) -> None:
    f = _field()
    res = find_sources(f.write(tmp_path / "field.fits"), from_legacy(legacy))
    score = df.score(f, df.finder_mask(res, f.image.shape))
    assert (score.found, score.total) == (found, 4)
    assert res.sources.stats["n_extended_regions"] == regions


# --------------------------------------------------------------------------------------------
# Active contours: the steps and the options
# --------------------------------------------------------------------------------------------


def test_chan_vese_refines_the_seeds_and_finds_every_structure() -> None:
    mask = _contour_mask()
    s = df.score(_field(), mask)
    assert (s.found, int(mask.sum())) == (4, 14208)
    # From a centred disk, far from every structure, the contour still finds all four.
    circle = _contour_mask(**{"ac-levelset": "CIRCLE"})
    assert df.score(_field(), circle).found == 4


@pytest.mark.parametrize(
    ("legacy", "base"),
    [
        ({"activecontour": "LRAC"}, {}),
        ({"ac-niters": 3}, {}),
        ({"ac-levelset": "CIRCLE"}, {}),
        ({"ac-levelset": "CHECKERBOARD"}, {}),
        ({"ac-levelsetsize": 0.3}, {"ac-levelset": "CIRCLE"}),
        ({"ac-tolerance": 0.0}, {}),
        ({"cv-nitersinner": 1}, {}),
        ({"cv-nitersreinit": 1}, {}),
        ({"cv-timestep": 0.001}, {}),
        ({"cv-wsize": 3.0}, {}),
        ({"cv-lambda1": 3.0}, {}),
        ({"cv-lambda2": 1.0}, {}),
        ({"cv-mu": 50.0}, {}),
        ({"cv-nu": 100.0}, {}),
        ({"cv-p": 2.0}, {}),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "-",
)
def test_each_contour_option_changes_the_mask(legacy: dict[str, Any], base: dict[str, Any]) -> None:
    assert not np.array_equal(_contour_mask(**base, **legacy), _contour_mask(**base))


def test_contour_weights_move_the_boundary_the_expected_way() -> None:
    n0 = int(_contour_mask().sum())
    # A heavier inside fit, a lighter outside fit, an area cost: a smaller inside.
    assert int(_contour_mask(**{"cv-lambda1": 3.0}).sum()) < n0
    assert int(_contour_mask(**{"cv-lambda2": 1.0}).sum()) < n0
    assert int(_contour_mask(**{"cv-nu": 100.0}).sum()) < n0
    # Stopped after 3 steps, the contour is still near the (smaller) seeds.
    assert int(_contour_mask(**{"ac-niters": 3}).sum()) < n0
    # A larger initial disk ends larger.
    small = int(_contour_mask(**{"ac-levelset": "CIRCLE"}).sum())
    assert int(_contour_mask(**{"ac-levelset": "CIRCLE", "ac-levelsetsize": 0.3}).sum()) > small


def test_evolve_stops_on_the_tolerance_or_the_step_cap() -> None:
    z, valid = activecontour.noise_units(_small())
    img = activecontour.contour_image(activecontour.smoothed_significance(z, valid), valid)
    opts = from_legacy({"extsfinder": "ACTIVE-CONTOUR", "ac-levelset": "CIRCLE"}).contour
    init = activecontour.initial_mask(img.shape, opts, np.zeros(img.shape, bool))
    _, steps = activecontour.evolve(img, init, opts)
    assert steps == 15  # settled after 3 outer iterations of 5 steps
    _, capped = activecontour.evolve(img, init, from_legacy({"ac-niters": 7}).contour)
    assert capped == 7


def test_contour_steps_are_capped_by_the_work_budget(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # 2048^2 image, wtscalemin 3: 512^2 block means, 1,907 steps at most.
    assert activecontour.step_budget(100_000, 512 * 512) == 1907
    assert activecontour.step_budget(1000, 512 * 512) == 1000
    assert activecontour.step_budget(100_000, 10**12) == 1
    z, valid = activecontour.noise_units(_small())
    img = activecontour.contour_image(activecontour.smoothed_significance(z, valid), valid)
    opts = from_legacy({"ac-niters": 100_000, "ac-tolerance": 0.0}).contour
    init = activecontour.initial_mask(img.shape, opts, np.zeros(img.shape, bool))
    monkeypatch.setattr(activecontour, "MAX_WORK", 12 * img.size)
    with caplog.at_level("WARNING", logger=activecontour.__name__):
        _, steps = activecontour.evolve(img, init, opts)
    assert steps == 12
    assert "ac-niters=100000 capped at 12 steps" in caplog.text


def test_significant_parts_drop_small_noise_blobs() -> None:
    z = np.zeros((40, 40))
    z[5:15, 5:15] = 1.0  # 100 px at 1 sigma: sum/sqrt(n) = 10
    z[30, 30] = 3.0  # one bright pixel: 3
    inside = z > 0.5
    zs = activecontour.smoothed_significance(z, np.ones(z.shape, bool))
    kept = activecontour.significant_parts(inside, z, zs, 5.0)
    assert int(kept.sum()) == 100 and not kept[30, 30]
    # A part whose smoothed peak stays below the threshold is dropped.
    assert not activecontour.significant_parts(inside, z, zs * 0.0, 5.0).any()


# --------------------------------------------------------------------------------------------
# Superpixels: merging and options
# --------------------------------------------------------------------------------------------


def test_merge_regions_joins_alike_neighbours_only() -> None:
    # A row of 6 regions of 100 px: three at mean 0, three at mean 2 (noise units).
    sums = np.array([0.0, 5.0, -5.0, 200.0, 195.0, 205.0])
    counts = np.full(6, 100.0)
    pairs = np.array([[i, i + 1] for i in range(5)])
    root = superpixel.merge_regions(sums, counts, pairs)
    assert len(set(root[:3])) == 1 and len(set(root[3:])) == 1 and root[0] != root[3]
    # A threshold above the 2-sigma step (in units of the means' noise: 2 / sqrt(2/100) = 14)
    # merges everything; a threshold below every difference merges nothing.
    assert len(set(superpixel.merge_regions(sums, counts, pairs, thr=1000.0))) == 1
    assert len(set(superpixel.merge_regions(sums, counts, pairs, thr=0.1))) == 6


def test_superpixels_find_the_structures_and_options_change_the_mask() -> None:
    mask = _superpixel_mask()
    assert (df.score(_field(), mask).found, int(mask.sum())) == (4, 13072)
    for legacy in ({"sp-size": 10}, {"sp-beta": 100.0}, {"sp-minarea": 400}):
        assert not np.array_equal(_superpixel_mask(**legacy), mask), legacy
    # Larger superpixels are too coarse for the thin arcs and filaments of this field.
    assert df.score(_field(), _superpixel_mask(**{"sp-size": 40})).found == 2


# --------------------------------------------------------------------------------------------
# Options of other methods, unknown methods
# --------------------------------------------------------------------------------------------


def test_method_options_are_reported_without_effect_for_other_methods() -> None:
    given = {"cv-mu": 2.0, "ac-niters": 10, "sp-size": 30, "sp-beta": 2.0, "saliency-thr": 3.0}
    assert ineffective_given({"extsfinder": "ACTIVE-CONTOUR", **given}) == [
        "saliency-thr",
        "sp-beta",
        "sp-size",
    ]
    assert ineffective_given({"extsfinder": "SP-HIERCLUST", **given}) == [
        "ac-niters",
        "cv-mu",
        "saliency-thr",
    ]
    assert ineffective_given({"extsfinder": "SALIENCY-THRESH", **given}) == [
        "ac-niters",
        "cv-mu",
        "sp-size",
    ]
    assert ineffective_given(given) == sorted(given)


def test_unknown_methods_are_refused(tmp_path: Path) -> None:
    app = CaesarApp()
    for name, value in (("extsfinder", "SP-KMEANS"), ("activecontour", "GAC")):
        with pytest.raises(OptionError, match=f"option '{name}' must be one of"):
            app.validate({name: value})
    # The library refuses them too (no silent fallback to another method).
    f = _field()
    path = f.write(tmp_path / "field.fits")
    with pytest.raises(ValueError, match="extsfinder"):
        find_sources(path, from_legacy({}).with_(extended={"method": "SP-KMEANS"}))
    blank = np.zeros(f.image.shape, bool)
    opts = from_legacy({}).with_(contour={"method": "GAC"})
    with pytest.raises(ValueError, match="activecontour"):
        activecontour.contour_mask_reduced(_small(), f.image.shape, blank, opts)
    with pytest.raises(ValueError, match="ac-levelset"):
        activecontour.initial_mask((8, 8), opts.contour.__class__(init="SQUARE"), blank[:8, :8])


@pytest.mark.parametrize("method", ["ACTIVE-CONTOUR", "SP-HIERCLUST"])
def test_search_map_is_saved(tmp_path: Path, method: str) -> None:
    f = _field()
    opts = from_legacy({"extsfinder": method, "save-saliencymap": True})
    res = find_sources(f.write(tmp_path / "field.fits"), opts)
    sal = res.sources.maps["saliency"]
    assert sal.shape == f.image.shape and np.isfinite(sal).all()
    # The map is higher on the structures than off them.
    truth = f.truth_sum() >= df.RMS
    assert float(np.median(sal[truth])) > float(np.median(sal[~truth]))


@pytest.mark.parametrize("shape", [(97, 130), (7, 5)])
def test_atrous_equals_the_correlation_with_the_holed_kernel(shape: tuple[int, int]) -> None:
    # The 5-tap sums give exactly ndimage.correlate1d's result with the kernel's zeros.
    from scipy import ndimage

    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ref = [img]
    for n in range(5):
        k = np.zeros(4 * 2**n + 1)
        k[:: 2**n] = extended.B3
        g = ndimage.correlate1d(ref[-1], k, axis=0, mode="mirror")
        ref.append(ndimage.correlate1d(g, k, axis=1, mode="mirror").astype(np.float32))
    got = extended.atrous(img, 5)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))


@pytest.mark.parametrize(
    ("shape", "f"), [((67, 70), 4), ((64, 64), 1), ((33, 35), 2), ((40, 37), 16)]
)
def test_block_mean_counts_the_valid_pixels_of_each_block(shape: tuple[int, int], f: int) -> None:
    # The counts come from adds of contiguous planes: the means of summing the valid values
    # and dividing by their number, NaN where a block has none.
    rng = np.random.default_rng(f)
    img = rng.standard_normal(shape).astype(np.float32)
    img[rng.random(shape) < 0.3] = np.nan
    img[: 2 * f, : 2 * f] = np.nan
    oy, ox = -(-shape[0] // f), -(-shape[1] // f)
    pad = np.full((oy * f, ox * f), np.nan, dtype=np.float32)
    pad[: shape[0], : shape[1]] = img
    blocks = pad.reshape(oy, f, ox, f)
    valid = np.isfinite(blocks)
    s = np.where(valid, blocks, np.float32(0.0)).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = (s / valid.sum(axis=(1, 3))).astype(np.float32)
    got = block_mean(img, f)
    assert got.dtype == np.float32 and np.array_equal(got, ref, equal_nan=True)
    assert np.isnan(got[0, 0]) and np.isnan(got[1, 1])
