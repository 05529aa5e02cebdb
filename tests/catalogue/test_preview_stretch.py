"""The preview's colour levels by lookup equal the asinh stretch computed value by value."""

from __future__ import annotations

import numpy as np
import pytest

from caesar_rest.catalogue import preview


def test_levels_by_lookup_equal_the_stretch_everywhere() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(0.0, 1.0, 200_000), rng.uniform(0.0, 1e-3, 50_000)])
    # Around every level boundary: the values on both sides of the step that holds it.
    first, mixed = preview._step_levels()
    steps = np.flatnonzero(mixed)
    assert steps.size >= 200  # most of the 255 boundaries fall inside a step
    edges = steps / preview._STEPS
    near = (edges[:, None] + np.linspace(0.0, 1.0 / preview._STEPS, 64)[None]).ravel()
    x = np.clip(np.concatenate([x, near, [0.0, 1.0, np.nextafter(1.0, 0.0)]]), 0.0, 1.0)
    assert np.array_equal(preview.stretch_levels(x), preview.stretch_level(x))
    assert preview.stretch_levels(np.array([0.0, 1.0])).tolist() == [0, 255]


def test_colourise_keeps_blank_pixels_grey() -> None:
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    img[1, 2] = np.nan
    rgb = preview.colourise(img)
    assert tuple(rgb[1, 2]) == preview.GREY
    assert tuple(rgb[0, 0]) == tuple(preview._LUT[0]) and tuple(rgb[2, 3]) == tuple(
        preview._LUT[255]
    )


def test_colourise_takes_the_colour_of_each_value_level() -> None:
    # The one lookup of step colours equals the colour map at the stretch of every value.
    rng = np.random.default_rng(11)
    img = (rng.standard_normal((300, 401)) * rng.uniform(0.1, 50.0, (300, 1))).astype(np.float32)
    img[rng.random(img.shape) < 0.01] = np.nan
    finite = np.isfinite(img)
    lo, hi = (float(v) for v in np.percentile(img[finite], [0.25, 99.75]))
    x = np.clip((np.where(finite, img, lo) - lo) * (1.0 / (hi - lo)), 0.0, 1.0)
    want = preview._LUT[preview.stretch_level(x)]
    want[~finite] = preview.GREY
    assert preview.colourise(img).tobytes() == want.tobytes()


@pytest.mark.parametrize("factor", [2, 3, 4, 7])
def test_block_means_equal_nanmean_with_and_without_blanks(factor: int) -> None:
    rng = np.random.default_rng(factor)
    img = (rng.standard_normal((61, 50)) * 30.0).astype(np.float32)  # edges padded with NaN
    even = img[: 7 * factor, : 5 * factor]  # no padding, no NaN: the shortcut
    for data in (img, even):
        by, bx = -(-data.shape[0] // factor), -(-data.shape[1] // factor)
        padded = np.full((by * factor, bx * factor), np.nan, dtype=np.float32)
        padded[: data.shape[0], : data.shape[1]] = data
        blocks = padded.reshape(by, factor, bx, factor)
        want = np.nanmean(blocks, axis=(1, 3), dtype=np.float32)
        assert preview.block_reduce(data, factor).tobytes() == want.tobytes()
