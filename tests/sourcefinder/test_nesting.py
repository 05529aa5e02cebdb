"""The LoG noise factor made from the beam's noise shared by the scales equals the factor
made from scratch for each scale (the code before the noise was shared)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from caesar_rest.sourcefinder import nesting


def _factor_from_scratch(sx: float, sy: float, th: float, scale: float, truncate: float) -> float:
    rng = np.random.default_rng(20240130)
    white = rng.standard_normal((256, 256))
    kernel = nesting._beam_kernel(sx, sy, th)
    noise = ndimage.convolve(white, kernel, mode="constant", cval=0.0)
    noise /= noise[32:-32, 32:-32].std()
    resp = -(scale**2) * ndimage.gaussian_laplace(noise, scale, truncate=truncate)
    return float(resp[48:-48, 48:-48].std())


def test_factor_of_every_scale_equals_the_one_made_from_scratch() -> None:
    nesting.log_noise_factor.cache_clear()
    nesting.beam_noise.cache_clear()
    beam = (1.84, 1.52, 0.4)
    # The scales of a small beam, and one whose LoG radius reaches past the centre's margin.
    for scale in [*nesting.blob_scales(4.33, 1.0, 3.0, 1.0), 13.0]:
        assert nesting.log_noise_factor(*beam, scale, 4.0) == _factor_from_scratch(
            *beam, scale, 4.0
        )
    assert nesting.beam_noise.cache_info().misses == 1  # one convolution for the scales
    assert not nesting.beam_noise(*beam).flags.writeable


def test_gaussian_laplace_equals_scipys() -> None:
    rng = np.random.default_rng(11)
    for shape, sigma in (((40, 57), 1.84), ((23, 31), 4.84), ((64, 64), 2.5), ((9, 12), 3.3)):
        img = rng.standard_normal(shape).astype(np.float32)
        got = nesting.gaussian_laplace(img, sigma, 4.0)
        want = ndimage.gaussian_laplace(img, sigma, truncate=4.0)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        cut = img.copy()
        cut[3, 4] = np.nan
        resp = nesting.log_response(cut, sigma, 4.0)
        filled = np.where(np.isfinite(cut), cut, 0.0).astype(np.float32)
        ref = -(sigma**2) * ndimage.gaussian_laplace(filled, sigma, truncate=4.0)
        ref[3, 4] = 0.0
        assert resp.tobytes() == ref.astype(np.float32).tobytes()
