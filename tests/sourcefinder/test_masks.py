"""Extended-source masks (issue 16): the diffuse-field simulator, the mask refinement, and the
one-to-one map between segmentation labels, island rows and region polygons."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from caesar_rest.apps.caesar_run import island_regions
from caesar_rest.apps.caesar_run import main as caesar_main
from caesar_rest.catalogue.writers import read_catalogue_csv
from caesar_rest.sourcefinder import build_catalogues, extended, find_sources, from_legacy, masks
from caesar_rest.sourcefinder.islands import MORPH_NAMES

from tests.support import diffuse_fields as df

# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


def test_diffuse_field_is_deterministic_with_truth_footprints() -> None:
    a = df.make_field(256, 4, 10, seed=3)
    b = df.make_field(256, 4, 10, seed=3)
    assert np.array_equal(a.image, b.image) and a.points == b.points
    assert not np.array_equal(a.image, df.make_field(256, 4, 10, seed=4).image)
    assert [s.kind for s in a.structures] == ["shell", "arc", "blob", "filament"]
    assert [(s.y0, s.x0, s.model.shape[0]) for s in a.structures] == [
        (64, 108, 47),
        (139, 38, 35),
        (27, 58, 67),
        (80, 126, 61),
    ]
    assert len(a.points) == 10
    # Footprint: the pixels where the model is at least 1 sigma, in full-image coordinates.
    assert [s.footprint()[0].size for s in a.structures] == [712, 61, 215, 107]
    s = a.structures[0]
    ys, xs = s.footprint()
    assert (s.model[ys - s.y0, xs - s.x0] >= df.RMS).all()
    assert int((s.model >= df.RMS).sum()) == ys.size
    # The image is the truth plus noise of rms RMS (beam-correlated).
    assert float(np.std(a.image - a.truth_sum())) == pytest.approx(df.RMS, rel=1e-5)


def test_scores_of_the_truth_an_empty_and_a_full_mask() -> None:
    f = df.make_field(256, 4, 10, seed=3)
    fp = np.zeros(f.image.shape, dtype=bool)
    for s in f.structures:
        ys, xs = s.footprint()
        fp[ys, xs] = True
    truth = df.score(f, fp)
    assert (truth.found, truth.total, truth.mean_recall, truth.precision) == (4, 4, 1.0, 1.0)
    # The footprint (>= 1 sigma) holds 76 % of the model flux: the rest is in faint wings.
    assert truth.flux_recovered == pytest.approx(0.75916, abs=1e-5)
    empty = df.score(f, np.zeros_like(fp))
    assert (empty.found, empty.mean_recall, empty.flux_recovered, empty.precision) == (
        0,
        0.0,
        0.0,
        1.0,
    )
    full = df.score(f, np.ones_like(fp))
    assert (full.found, full.flux_recovered) == (4, 1.0)
    # Precision of everything: the share of the image where some source is >= 0.25 sigma.
    assert full.precision == float((f.truth_sum() >= 0.25 * df.RMS).mean()) == 0.050537109375


# --------------------------------------------------------------------------------------------
# The refinement, on a block grid
# --------------------------------------------------------------------------------------------


def _blob_grid(amp: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 128
    yy, xx = np.mgrid[0:n, 0:n]
    blob = amp * np.exp(-0.5 * ((xx - 64.0) ** 2 + (yy - 60.0) ** 2) / 10.0**2)
    img = (rng.standard_normal((n, n)) * 0.25 + blob).astype(np.float32)
    return img, blob


def test_refine_follows_a_faint_blob_and_claims_no_noise() -> None:
    img, blob = _blob_grid(1.0)
    seeds = np.zeros(img.shape, dtype=bool)
    seeds[58:63, 62:67] = True
    found, d = masks.refine(img, seeds, 1.0, 1, 4, 1.0, masks.MaskSettings())
    lab, n = ndimage.label(found)
    assert n == 1 and found[60, 64]
    # Within the blob's 0.25 level (noise 0.25 per block), three quarters of its 0.5 level.
    assert not (found & (blob < 0.25)).any()
    assert float(found[blob >= 0.5].mean()) == pytest.approx(0.74600, abs=1e-5)
    assert int(found.sum()) == 332
    # The denoised image at the centre: most of the peak, without the noise.
    assert float(d[60, 64]) == pytest.approx(0.71865, abs=1e-5)
    # Noise alone: nothing, with or without seeds.
    noise, _ = _blob_grid(0.0)
    assert not masks.refine(noise, seeds, 1.0, 1, 4, 1.0, masks.MaskSettings())[0].any()
    assert not masks.refine(noise, seeds & False, 1.0, 1, 4, 1.0, masks.MaskSettings())[0].any()


def test_shared_decomposition_gives_the_values_of_separate_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The wavelet method and the refinement of one pass decompose the block means once;
    # the masks, the search map and the denoised image are those of two decompositions.
    img, _ = _blob_grid(1.0)
    img[:3, :7] = np.nan
    shape = (img.shape[0] * 4, img.shape[1] * 4)
    blank = np.zeros(shape, dtype=bool)
    seeds = np.zeros(img.shape, dtype=bool)
    seeds[58:63, 62:67] = True
    mask0, sal0 = extended.wavelet_mask_reduced(img, shape, blank, 3, 6, 5.0, 2.5)
    found0, d0 = masks.refine(img, seeds, 1.0, 1, 4, 1.0, masks.MaskSettings())
    calls: list[int] = []
    real = extended.atrous

    def counted(a: np.ndarray, n: int) -> list[np.ndarray]:
        calls.append(n)
        return real(a, n)

    monkeypatch.setattr(extended, "atrous", counted)
    shared = extended.Planes()
    mask1, sal1 = extended.wavelet_mask_reduced(img, shape, blank, 3, 6, 5.0, 2.5, True, shared)
    found1, d1 = masks.refine(img, seeds, 1.0, 1, 4, 1.0, masks.MaskSettings(), shared)
    assert calls == [5]
    assert sal0 is not None and sal1 is not None
    assert np.array_equal(mask0, mask1) and np.array_equal(sal0, sal1)
    assert np.array_equal(found0, found1) and np.array_equal(d0, d1)
    assert int(mask1.sum()) == 22288 and int(found1.sum()) == 332
    # Another array (a new pass) is decomposed again.
    masks.refine(img.copy(), seeds, 1.0, 1, 4, 1.0, masks.MaskSettings(), shared)
    assert calls == [5, 5]


def test_outline_stays_within_one_block_and_keeps_the_seeded_part() -> None:
    found = np.zeros((8, 8), dtype=bool)
    found[2:6, 2:6] = True
    d = np.where(found, np.float32(1.0), np.float32(0.0))
    d[0, 7] = 1.0  # above the level but two blocks away: not claimed
    out = masks.outline(found, d, 0.5, 4, (30, 32))
    assert out.shape == (30, 32)
    ys, xs = np.nonzero(out)
    # The bilinear boundary lies between the block centres (1.5 and 2.5 px from the edge).
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8, 23, 8, 23)
    assert not out[:, 28:].any()


# --------------------------------------------------------------------------------------------
# The default run on a small field
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_field(tmp_path_factory: pytest.TempPathFactory) -> tuple[df.Field, Path]:
    f = df.make_field(512, 4, 20, seed=2)
    return f, f.write(tmp_path_factory.mktemp("diffuse") / "field.fits")


def test_default_extended_search_masks_on_a_small_field(
    small_field: tuple[df.Field, Path],
) -> None:
    f, path = small_field
    res = find_sources(path, from_legacy({}))
    mask = df.finder_mask(res, f.image.shape)
    s = df.score(f, mask)
    assert (s.found, s.total, int(mask.sum())) == (4, 4, 10831)
    assert s.precision == pytest.approx(0.90112, abs=1e-5)
    assert s.flux_recovered == pytest.approx(0.70298, abs=1e-5)
    # Without the extended search: compact islands only.
    off = df.score(
        f,
        df.finder_mask(find_sources(path, from_legacy({"no-extendedsearch": True})), f.image.shape),
    )
    assert off.found == 2 and off.flux_recovered < 0.32  # 0.3165 (0.3002, predecessor's bkg)


def test_extended_rows_labels_and_polygons_map_one_to_one(
    small_field: tuple[df.Field, Path],
) -> None:
    _, path = small_field
    res = find_sources(path, from_legacy({}), want_maps=frozenset({"segmented"}))
    cats = build_catalogues(res)
    tab = cats.islands
    seg = res.sources.maps["segmented"].astype(np.int64)
    n = len(tab)
    assert list(tab["label"]) == list(range(1, n + 1)) == list(tab["island_id"] + 1)
    assert list(tab["island_name"]) == [f"S{k}" for k in range(n)]
    # Each label's pixels are its row's mask: count and flux-weighted centroid inside it.
    counts = np.bincount(seg.ravel(), minlength=n + 1)
    assert counts[1:].tolist() == list(tab["npix"])
    for row in tab:
        ys, xs = np.nonzero(seg == row["label"])
        assert xs.min() <= row["x"] <= xs.max() and ys.min() <= row["y"] <= ys.max()
    ext = tab[np.isin(tab["morph"], [MORPH_NAMES[3], MORPH_NAMES[4]])]
    assert list(ext["island_name"]) == ["S5", "S12", "S24"]
    # (S24 held a nested compact source, COMPACT-EXTENDED, with the predecessor's background.)
    assert list(ext["morph"]) == ["EXTENDED", "EXTENDED", "EXTENDED"]
    assert list(ext["npix"]) == [2147, 5640, 779] and list(ext["n_nested"]) == [0, 0, 0]
    assert (ext["flags"] & 8).all()
    assert list(np.round(ext["flux"] * 1e3, 2)) == [18.76, 53.83, 20.34]  # mJy
    assert (ext["flux"] > 10 * ext["flux_err"]).all()
    assert np.allclose(ext["area"], ext["npix"] * 1.5**2)
    # One polygon per row, in row order, tagged with the row's name and label.
    lines = [ln for ln in island_regions(res, None).splitlines() if ln.startswith("polygon(")]
    tags = [re.search(r"text=\{(S\d+)\} tag=\{label (\d+)\}", ln) for ln in lines]
    assert [(m.group(1), int(m.group(2))) for m in tags if m] == [
        (str(r["island_name"]), int(r["label"])) for r in tab
    ]


def test_app_segmented_map_is_integer_labels_of_the_island_rows(
    small_field: tuple[df.Field, Path], tmp_path: Path
) -> None:
    _, path = small_field
    out = tmp_path / "out"
    argv = ["--input", str(path), "--outdir", str(out), "--save-segmentedmap", "--no-preview"]
    assert caesar_main(argv) == 0
    with fits.open(out / "segmented.fits") as hdul:
        seg = hdul[0].data
        assert seg.dtype.kind == "i" and "BUNIT" not in hdul[0].header
    rows = Table.read(out / "islands.csv", format="ascii.csv")
    assert len(read_catalogue_csv(out / "islands.csv")) == len(rows)
    assert int(seg.max()) == len(rows) and sorted(np.unique(seg[seg > 0])) == list(rows["label"])
    assert np.bincount(seg.ravel())[1:].tolist() == list(rows["npix"])
    assert (out / "islands.reg").read_text().count("polygon(") == len(rows)


@pytest.mark.parametrize("frac", [0.002, 0.3])
def test_removal_mask_equals_a_disk_dilation(frac: float) -> None:
    # Few removed pixels take the shifted-pixel path, many the whole-image dilation.

    rng = np.random.default_rng(1)
    labels = (rng.random((301, 257)) < frac).astype(np.int32) * rng.integers(1, 4, (301, 257))
    labels[0, 0] = labels[-1, -1] = labels[5, -1] = 1
    remove = np.array([False, True, False, True])
    yy, xx = np.mgrid[-4:5, -4:5]
    want = ndimage.binary_dilation(np.isin(labels, [1, 3]), structure=(xx**2 + yy**2) <= 16)
    assert np.array_equal(extended.removal_mask(labels.astype(np.int32), remove, 9), want)


@pytest.mark.parametrize(
    ("ny", "nx", "f"), [(64, 64, 4), (63, 70, 4), (10, 9, 1), (33, 17, 2), (5, 5, 8)]
)
def test_reduce_mask_sets_the_blocks_with_any_pixel_set(ny: int, nx: int, f: int) -> None:
    m = np.random.default_rng(ny * nx + f).random((ny, nx)) < 0.1
    shape = (-(-ny // f), -(-nx // f))
    pad = np.zeros((shape[0] * f, shape[1] * f), dtype=bool)
    pad[:ny, :nx] = m
    got = masks.reduce_mask(m, f, shape)
    assert got.dtype == bool and got.shape == shape
    assert np.array_equal(got, pad.reshape(shape[0], f, shape[1], f).any(axis=(1, 3)))
    assert int(masks.reduce_mask(np.ones((ny, nx), dtype=bool), f, shape).sum()) == got.size
