"""The faster forms in :mod:`caesar_rest.apps.mrcnn_net` give the plain forms' values."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from caesar_rest.apps import mrcnn_net


def test_pool_is_the_reshape_max() -> None:
    x = np.random.default_rng(1).standard_normal((3, 8, 12)).astype(np.float32)
    plain = x.reshape(3, 4, 2, 6, 2).max(axis=(2, 4))
    assert np.array_equal(mrcnn_net._pool(x), plain)


def test_near_on_the_bounding_box_is_the_whole_image_edt() -> None:
    rng = np.random.default_rng(2)
    for radius in (0.5, 3.0, 12.0):
        mask = np.zeros((90, 70), dtype=bool)
        mask[rng.integers(20, 60, 5), rng.integers(15, 50, 5)] = True
        mask[0, 3] = radius > 1  # a pixel on the edge in some rounds
        whole = ndimage.distance_transform_edt(~mask) <= radius
        assert np.array_equal(mrcnn_net._near(mask, radius), whole)


def test_peak_cut_is_the_labelled_maximum() -> None:
    rng = np.random.default_rng(3)
    sig = rng.normal(0.0, 2.5, (60, 60)).astype(np.float32)
    sig[5, 5] = np.nan
    classes = (rng.random((60, 60)) < 0.4).astype(np.uint8)  # class 1 (compact)
    obj = mrcnn_net.objects(classes, np.ones((60, 60), np.float32), 4.0, sig)
    lab, n = ndimage.label(classes == 1, structure=np.ones((3, 3), bool))
    peak = np.asarray(ndimage.maximum(np.abs(np.nan_to_num(sig)), lab, np.arange(n + 1)))
    npix = np.bincount(lab.ravel(), minlength=n + 1)
    expected = int(((peak >= mrcnn_net.MIN_PEAK_SNR) & (npix >= mrcnn_net.MIN_NPIX))[1:].sum())
    assert 0 < len(obj.scores) == expected
