"""The preview's colour levels by lookup equal the asinh stretch computed value by value."""

from __future__ import annotations

import numpy as np

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
