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
    for scale in nesting.blob_scales(4.33, 1.0, 3.0, 1.0):
        assert nesting.log_noise_factor(*beam, scale, 4.0) == _factor_from_scratch(
            *beam, scale, 4.0
        )
    assert nesting.beam_noise.cache_info().misses == 1  # one convolution for the scales
    assert not nesting.beam_noise(*beam).flags.writeable
