"""The ``mrcnn`` app's native network: a small U-Net run in NumPy, and its objects.

Architecture (:data:`LAYERS`; weights trained by ``scripts/train_mrcnn.py`` with PyTorch on
simulated fields, shipped as ``mrcnn_weights.npz``):

* input: 2 channels made from the significance map ``(image - background) / rms`` (the
  classifier's noise maps), ``asinh(S / 2) / 4`` and ``clip(S, -3, 8) / 4``, resampled so that
  the beam FWHM is :data:`BEAM_PIX` pixels;
* encoder: two 3x3 convolutions (8 channels), 2x2 max-pool, two 3x3 convolutions (24), 2x2
  max-pool, two 3x3 convolutions dilated by 2 (32) at a quarter of the resolution;
* decoder: 1x1 convolution, nearest 2x upsampling added to the encoder's map of that
  resolution, 3x3 convolution (24, then 8); ReLU after every 3x3 convolution;
* output: a 1x1 convolution to 6 logits per pixel, the classes of :data:`NET_CLASSES`
  (background first).

The field of view of an output pixel is about 60 input pixels (15 beams). Large images run in
tiles (:data:`TILE` output pixels with a :data:`HALO` margin): the memory is a tile's, and a
tiled run gives the same maps as one over the whole image.

Objects (:func:`objects`): the connected pixels (8-connectivity) of one class form an object;
the pieces of an ``extended-multisland``, ``spurious`` or ``diffuse`` object closer than
:data:`GROUP_BEAMS` beams are one object (a radio galaxy's core and lobes, the sidelobes of
one source). An object needs :data:`MIN_NPIX` pixels and a pixel above :data:`MIN_PEAK_SNR`
sigma (a diffuse one: :data:`MIN_DIFFUSE_BEAMS` beams of area instead). Its score is the mean,
over its pixels, of the probability of its class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

F32 = npt.NDArray[np.float32]

#: The network's classes (index 0: background); the names are the catalogue's classes.
NET_CLASSES = ("background", "compact", "extended", "extended-multisland", "spurious", "diffuse")
#: Beam FWHM, in pixels, of the network's input.
BEAM_PIX = 4.0
#: Resampling is skipped when the beam is within this fraction of :data:`BEAM_PIX`.
RESAMPLE_TOL = 0.05
#: The range of resampling factors (a beam of 2 to 32 pixels reaches :data:`BEAM_PIX` within it).
ZOOM_RANGE = (1.0 / 8.0, 2.0)
#: Output tile side and the margin of input around it (network pixels, multiples of 4).
TILE = 1024
HALO = 48
#: Pieces of a multi-island class within this many beams (edge to edge) are one object.
GROUP_BEAMS = 6.0
#: Classes whose pieces are grouped.
GROUPED = ("extended-multisland", "spurious", "diffuse")
#: Objects need at least this many pixels.
MIN_NPIX = 3
#: Objects need a pixel this significant (absolute value: sidelobes may be negative)...
MIN_PEAK_SNR = 5.0
#: ... except diffuse ones (3-8 sigma), which need this many beams of area instead.
MIN_DIFFUSE_BEAMS = 25.0
#: Values gathered per matrix product of a convolution (bounds its memory: 4 bytes each).
BAND_VALUES = 1 << 22
#: The shipped weights.
WEIGHTS = Path(__file__).with_name("mrcnn_weights.npz")

#: (name, input channels, output channels, kernel, dilation) of every convolution.
LAYERS: tuple[tuple[str, int, int, int, int], ...] = (
    ("e1a", 2, 8, 3, 1),
    ("e1b", 8, 8, 3, 1),
    ("e2a", 8, 24, 3, 1),
    ("e2b", 24, 24, 3, 1),
    ("b1", 24, 32, 3, 2),
    ("b2", 32, 32, 3, 2),
    ("p2", 32, 24, 1, 1),
    ("d2", 24, 24, 3, 1),
    ("p1", 24, 8, 1, 1),
    ("d1", 8, 8, 3, 1),
    ("head", 8, len(NET_CLASSES), 1, 1),
)


@dataclass(frozen=True)
class Net:
    """The network's weights: ``(weight (out, in, k, k), bias (out,))`` per layer name."""

    params: dict[str, tuple[F32, F32]]

    def conv(self, name: str, x: F32) -> F32:
        """Layer ``name`` on ``x`` (channels, height, width), zero-padded to keep the size."""
        w, b = self.params[name]
        dil = {n: d for n, _, _, _, d in LAYERS}[name]
        return conv2d(x, w, b, dil)


def load(path: Path = WEIGHTS) -> Net:
    """Read a weights file written by ``scripts/train_mrcnn.py``.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    Net
        The weights, checked against :data:`LAYERS`.
    """
    with np.load(path) as z:
        params = {}
        for name, cin, cout, k, _ in LAYERS:
            w = np.asarray(z[f"{name}.weight"], dtype=np.float32)
            b = np.asarray(z[f"{name}.bias"], dtype=np.float32)
            if w.shape != (cout, cin, k, k) or b.shape != (cout,):
                raise ValueError(f"{path}: layer {name} has shape {w.shape}, not the network's")
            params[name] = (w, b)
    return Net(params)


@lru_cache(maxsize=1)
def shipped() -> Net:
    """The weights shipped in the package (read once)."""
    return load(WEIGHTS)


def conv2d(x: F32, w: F32, b: F32, dilation: int = 1) -> F32:
    """Cross-correlation of ``x`` (C, H, W) with ``w`` (O, C, k, k), zero padding, plus ``b``.

    As PyTorch's ``conv2d(padding=dilation * (k // 2), dilation=dilation)``: the kernel taps of
    a band of rows gathered into one matrix (about :data:`BAND_VALUES` values) and multiplied
    by the weights at once.

    Parameters
    ----------
    x
        Input maps.
    w, b
        Weights and biases.
    dilation
        Spacing of the kernel taps.

    Returns
    -------
    numpy.ndarray
        (O, H, W) float32.
    """
    c, h, wd = x.shape
    o, k = w.shape[0], w.shape[2]
    if k == 1:
        out = w[:, :, 0, 0] @ x.reshape(c, -1) + b[:, None]
        return out.reshape(o, h, wd).astype(np.float32, copy=False)
    p = dilation * (k // 2)
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    wm = w.reshape(o, c * k * k)
    res = np.empty((o, h, wd), dtype=np.float32)
    step = max(1, BAND_VALUES // max(c * k * k * wd, 1))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        band = xp[:, r0 : r1 + 2 * p, :]
        win = sliding_window_view(band, (2 * p + 1, 2 * p + 1), axis=(1, 2))
        cols = win[:, :, :, ::dilation, ::dilation].transpose(0, 3, 4, 1, 2)
        res[:, r0:r1, :] = (wm @ cols.reshape(c * k * k, -1)).reshape(o, r1 - r0, wd)
    res += b[:, None, None]
    return res


def _relu(x: F32) -> F32:
    # In place: every caller passes a convolution's fresh output.
    return np.maximum(x, np.float32(0.0), out=x)


def _pool(x: F32) -> F32:
    # 2x2 max-pool as the maximum of the four strided views (a reduction over the axes of a
    # (c, h/2, 2, w/2, 2) reshape gives the same values several times slower).
    top = np.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2])
    return np.maximum(top, np.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]), out=top)


def _up(x: F32) -> F32:
    return x.repeat(2, axis=1).repeat(2, axis=2)


def forward(net: Net, x: F32) -> F32:
    """Logits (6, H, W) of the input channels ``x`` (2, H, W); H and W multiples of 4.

    Parameters
    ----------
    net
        The weights.
    x
        Input channels (:func:`input_channels`).

    Returns
    -------
    numpy.ndarray
        Class logits per pixel.
    """
    if x.shape[1] % 4 or x.shape[2] % 4:
        raise ValueError("the network's input sides must be multiples of 4")
    e1 = _relu(net.conv("e1b", _relu(net.conv("e1a", x))))
    e2 = _relu(net.conv("e2b", _relu(net.conv("e2a", _pool(e1)))))
    bot = _relu(net.conv("b2", _relu(net.conv("b1", _pool(e2)))))
    d2 = _relu(net.conv("d2", _up(net.conv("p2", bot)) + e2))
    d1 = _relu(net.conv("d1", _up(net.conv("p1", d2)) + e1))
    return net.conv("head", d1)


def input_channels(sig: F32) -> F32:
    """The network's two input channels of a significance map (NaN read as 0)."""
    s = np.nan_to_num(sig.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.stack([np.arcsinh(s / 2.0) / 4.0, np.clip(s, -3.0, 8.0) / 4.0]).astype(np.float32)


def zoom_factor(beam_fwhm_pix: float) -> float:
    """Resampling factor bringing a beam of ``beam_fwhm_pix`` pixels to :data:`BEAM_PIX`
    (1 within :data:`RESAMPLE_TOL`, clipped to :data:`ZOOM_RANGE`)."""
    z = BEAM_PIX / max(beam_fwhm_pix, 1e-6)
    if abs(z - 1.0) <= RESAMPLE_TOL:
        return 1.0
    return float(np.clip(z, *ZOOM_RANGE))


def _net_extent(n: int, z: float) -> int:
    # Network pixels u = 0..m-1 sample image coordinates u / z inside 0..n-1.
    return n if z == 1.0 else int(math.floor((n - 1) * z)) + 1


def sample(img: F32, z: float, rows: tuple[int, int], cols: tuple[int, int], order: int) -> F32:
    """Network-grid pixels ``rows x cols`` (half-open) of an image-grid map.

    Parameters
    ----------
    img
        Map on the image grid.
    z
        Zoom factor (:func:`zoom_factor`).
    rows, cols
        Ranges of network pixels (may pass the map's edge: zeros there).
    order
        Interpolation order (1: linear, 0: nearest).

    Returns
    -------
    numpy.ndarray
        The samples, float32.
    """
    ny, nx = img.shape
    if z == 1.0:
        out = np.zeros((rows[1] - rows[0], cols[1] - cols[0]), dtype=np.float32)
        y0, y1 = max(rows[0], 0), min(rows[1], ny)
        x0, x1 = max(cols[0], 0), min(cols[1], nx)
        out[y0 - rows[0] : y1 - rows[0], x0 - cols[0] : x1 - cols[0]] = img[y0:y1, x0:x1]
        return out
    yy = np.arange(rows[0], rows[1], dtype=np.float64) / z
    xx = np.arange(cols[0], cols[1], dtype=np.float64) / z
    coords = np.meshgrid(yy, xx, indexing="ij")
    inside = (coords[0] <= ny - 1) & (coords[1] <= nx - 1) & (coords[0] >= 0) & (coords[1] >= 0)
    vals = ndimage.map_coordinates(img, coords, order=order, mode="nearest")
    return np.where(inside, vals, 0).astype(np.float32)


def class_maps(
    sig: F32, beam_fwhm_pix: float, net: Net | None = None
) -> tuple[npt.NDArray[np.uint8], F32]:
    """Per-pixel class and class probability of an image, tile by tile.

    Parameters
    ----------
    sig
        Significance map.
    beam_fwhm_pix
        Beam FWHM in image pixels.
    net
        The weights (default: the shipped ones).

    Returns
    -------
    classes, probability
        uint8 index of :data:`NET_CLASSES` of the most probable class, and its probability.
    """
    model = net if net is not None else shipped()
    z = zoom_factor(beam_fwhm_pix)
    ny, nx = sig.shape
    my, mx = _net_extent(ny, z), _net_extent(nx, z)
    classes = np.zeros((ny, nx), dtype=np.uint8)
    prob = np.zeros((ny, nx), dtype=np.float32)
    for r0 in range(0, my, TILE):
        for c0 in range(0, mx, TILE):
            r1, c1 = min(r0 + TILE, my), min(c0 + TILE, mx)
            logits = _tile_logits(model, sig, z, (r0, r1), (c0, c1))
            _to_image(logits, z, (r0, r1), (c0, c1), (ny, nx), classes, prob)
    return classes, prob


def _tile_logits(net: Net, sig: F32, z: float, rows: tuple[int, int], cols: tuple[int, int]) -> F32:
    # Logits of network pixels rows x cols: the network over the tile and its halo (the
    # region's start a multiple of 4, so the pooling grid is the whole image's).
    ra, ca = max(rows[0] - HALO, 0), max(cols[0] - HALO, 0)
    rb, cb = rows[1] + HALO, cols[1] + HALO
    rb, cb = ra + 4 * math.ceil((rb - ra) / 4), ca + 4 * math.ceil((cb - ca) / 4)
    x = input_channels(sample(sig, z, (ra, rb), (ca, cb), order=1))
    out = forward(net, x)
    return out[:, rows[0] - ra : rows[1] - ra, cols[0] - ca : cols[1] - ca]


def _to_image(
    logits: F32,
    z: float,
    rows: tuple[int, int],
    cols: tuple[int, int],
    shape: tuple[int, int],
    classes: npt.NDArray[np.uint8],
    prob: F32,
) -> None:
    # Softmax and argmax of a tile's logits, written to the image pixels it covers (nearest
    # network pixel when resampled).
    ny, nx = shape
    if z == 1.0:
        ys, xs = slice(rows[0], rows[1]), slice(cols[0], cols[1])
        lg = logits
    else:
        y0, y1 = math.ceil((rows[0] - 0.5) / z), math.ceil((rows[1] - 0.5) / z)
        x0, x1 = math.ceil((cols[0] - 0.5) / z), math.ceil((cols[1] - 0.5) / z)
        y0, y1, x0, x1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        if y0 >= y1 or x0 >= x1:
            return
        iy = np.clip(np.rint(np.arange(y0, y1) * z).astype(int) - rows[0], 0, logits.shape[1] - 1)
        ix = np.clip(np.rint(np.arange(x0, x1) * z).astype(int) - cols[0], 0, logits.shape[2] - 1)
        ys, xs = slice(y0, y1), slice(x0, x1)
        lg = logits[:, iy[:, None], ix[None, :]]
    e = np.exp(lg - lg.max(axis=0, keepdims=True))
    p = e / e.sum(axis=0, keepdims=True)
    classes[ys, xs] = p.argmax(axis=0).astype(np.uint8)
    prob[ys, xs] = p.max(axis=0)


@dataclass
class Objects:
    """Objects of a class map.

    Attributes
    ----------
    labels
        int32 object label per pixel (0: none), 1..n.
    classes
        Class name of each object (row ``k`` is label ``k + 1``).
    scores
        Mean probability of its class over its pixels.
    boxes
        ``(x0, y0, x1, y1)`` inclusive pixel bounds.
    """

    labels: npt.NDArray[np.int32]
    classes: npt.NDArray[np.str_]
    scores: npt.NDArray[np.float64]
    boxes: npt.NDArray[np.float64]


def objects(
    classes: npt.NDArray[np.uint8], prob: F32, beam_fwhm_pix: float, sig: F32 | None = None
) -> Objects:
    """The objects of a class map (see the module notes).

    Parameters
    ----------
    classes, prob
        From :func:`class_maps`.
    beam_fwhm_pix
        Beam FWHM in image pixels (the grouping distance, the diffuse objects' least area).
    sig
        The significance map (None: no cut on the peak or the area).

    Returns
    -------
    Objects
        Labels numbered in class order, then raster order.
    """
    labels = np.zeros(classes.shape, dtype=np.int32)
    names: list[str] = []
    eight = np.ones((3, 3), dtype=bool)
    # Pixels above the peak cut (NaN is not): an object passes when it holds one.
    bright = None if sig is None else np.abs(sig) >= MIN_PEAK_SNR
    for k, name in enumerate(NET_CLASSES[1:], start=1):
        mask = classes == k
        if not mask.any():
            continue
        if name in GROUPED:
            lab, n = ndimage.label(_near(mask, GROUP_BEAMS * beam_fwhm_pix / 2.0), structure=eight)
            lab = np.where(mask, lab, 0)
        else:
            lab, n = ndimage.label(mask, structure=eight)
        npix = np.bincount(lab.ravel(), minlength=n + 1)
        good = npix >= MIN_NPIX
        if bright is not None and name == "diffuse":
            good &= npix >= MIN_DIFFUSE_BEAMS * 1.1331 * beam_fwhm_pix**2
        elif bright is not None:
            good &= np.bincount(lab[bright], minlength=n + 1) > 0
        keep = np.flatnonzero(good)
        keep = keep[keep > 0]
        lut = np.zeros(n + 1, dtype=np.int32)
        lut[keep] = len(names) + 1 + np.arange(keep.size, dtype=np.int32)
        labels = np.where(mask, lut[lab], labels)
        names += [name] * int(keep.size)
    m = len(names)
    if not m:
        return Objects(labels, np.zeros(0, dtype="U19"), np.zeros(0), np.zeros((0, 4)))
    flat = labels.ravel()
    npix = np.bincount(flat, minlength=m + 1)[1:]
    score = np.bincount(flat, weights=prob.ravel(), minlength=m + 1)[1:] / np.maximum(npix, 1)
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in slices], dtype=np.float64
    )
    return Objects(labels, np.asarray(names, dtype="U19"), score.astype(np.float64), boxes)


def _near(mask: npt.NDArray[np.bool_], radius: float) -> npt.NDArray[np.bool_]:
    """Pixels within ``radius`` (Euclidean, pixel centres) of a pixel of ``mask``.

    The distance transform runs on the mask's bounding box grown by the radius: no pixel
    outside it is that close, so the result is the whole image's.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    m = int(math.floor(radius)) + 1
    y0, y1 = max(int(rows[0]) - m, 0), min(int(rows[-1]) + m + 1, mask.shape[0])
    x0, x1 = max(int(cols[0]) - m, 0), min(int(cols[-1]) + m + 1, mask.shape[1])
    near = np.zeros(mask.shape, dtype=bool)
    near[y0:y1, x0:x1] = ndimage.distance_transform_edt(~mask[y0:y1, x0:x1]) <= radius
    return near
