"""The ``mrcnn`` app's native network: NumPy inference against the PyTorch reference stored at
export time, tiling, objects from a class map, the simulated truth, and the app's run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from caesar_rest.apps import mrcnn_net as mn
from caesar_rest.apps.mrcnn_app import PATH_ENV, MrcnnApp
from caesar_rest.apps.mrcnn_run import MrcnnFinder
from caesar_rest.apps.mrcnn_sim import image_of, truth_field
from caesar_rest.apps.program import run
from caesar_rest.catalogue.schema import CLASSES, COLUMN_NAMES
from caesar_rest.classify.features import beam_fwhm_pix, find_islands
from caesar_rest.classify.simfields import make_field, write_field


def test_numpy_network_reproduces_the_exported_pytorch_logits() -> None:
    with np.load(mn.WEIGHTS) as z:
        ref, logits = z["ref_input"], z["ref_logits"]
    out = mn.forward(mn.shipped(), ref)
    np.testing.assert_allclose(out, logits, atol=1e-4)
    assert mn.WEIGHTS.stat().st_size < 1 << 20


def test_conv2d_is_a_cross_correlation() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 20, 17)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    b = np.array([0.5, -1.0], dtype=np.float32)
    for dil in (1, 2):
        got = mn.conv2d(x, w, b, dil)
        for o in range(2):
            k = np.zeros((3, 2 * dil + 1, 2 * dil + 1), dtype=np.float32)
            k[:, ::dil, ::dil] = w[o]
            want = ndimage.correlate(x, k, mode="constant")[1] + b[o]
            np.testing.assert_allclose(got[o], want, atol=1e-4)


def test_weights_of_another_shape_are_refused(tmp_path: Path) -> None:
    with np.load(mn.WEIGHTS) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["e2a.weight"] = arrays["e2a.weight"][:, :4]
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError, match="layer e2a has shape"):
        mn.load(tmp_path / "w.npz")


def test_tiled_maps_equal_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    field = make_field(5, 192)
    isl = find_islands(image_of(field))
    for fwhm in (beam_fwhm_pix(image_of(field)), 5.5):  # as is, and resampled
        whole = mn.class_maps(isl.sig, fwhm)
        monkeypatch.setattr(mn, "TILE", 64)
        tiled = mn.class_maps(isl.sig, fwhm)
        monkeypatch.setattr(mn, "TILE", 1024)
        assert np.mean(tiled[0] != whole[0]) < 1e-4
        np.testing.assert_allclose(tiled[1], whole[1], atol=1e-4)


def test_objects_of_a_class_map() -> None:
    classes = np.zeros((60, 80), dtype=np.uint8)
    prob = np.full(classes.shape, 0.5, dtype=np.float32)
    classes[5:9, 5:9] = 1  # a compact object
    prob[5:9, 5:9] = 0.9
    classes[5:9, 12:16] = 1  # another, 3 pixels apart: not grouped
    classes[30:34, 10:14] = 3  # two multi-island pieces 10 pixels apart: one object
    classes[30:34, 24:28] = 3
    classes[50:52, 70] = 2  # 2 pixels: too small
    obj = mn.objects(classes, prob, beam_fwhm_pix=4.0)
    assert list(obj.classes) == ["compact", "compact", "extended-multisland"]
    np.testing.assert_allclose(obj.scores, [0.9, 0.5, 0.5])
    assert obj.boxes[2].tolist() == [10, 30, 27, 33]
    assert set(np.unique(obj.labels[30:34, 10:28])) == {0, 3}
    assert obj.labels[50, 70] == 0
    # With the significance map: the second compact object peaks at 4 sigma, below the cut.
    sig = np.zeros(classes.shape, dtype=np.float32)
    sig[5:9, 5:9], sig[5:9, 12:16], sig[30:34, 24:28] = 6.0, 4.0, -7.0
    cut = mn.objects(classes, prob, 4.0, sig)
    assert list(cut.classes) == ["compact", "extended-multisland"]
    assert set(np.unique(cut.labels[5:9, 12:16])) == {0}


def test_truth_field_is_make_fields_field() -> None:
    tf = truth_field(11, 256)
    field = make_field(11, 256)
    assert np.array_equal(tf.field.image, field.image)
    ys, xs = np.nonzero(tf.classes)
    names = np.asarray(mn.NET_CLASSES)[tf.classes[ys, xs]]
    assert np.array_equal(names, field.label_at(xs, ys))
    # Every object is of one class; a galaxy's lobes are one object.
    assert np.array_equal(tf.object_class[tf.objects[ys, xs]], tf.classes[ys, xs])
    galaxies = np.flatnonzero(tf.object_class == 3)
    assert galaxies.size >= 1
    pieces = ndimage.label(tf.objects == galaxies[0])[1]
    assert pieces >= 2


def test_app_run_ends_with_a_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PATH_ENV, raising=False)
    tf = truth_field(12, 256)
    path = tmp_path / "field.fits"
    write_field(tf.field, str(path))
    summary = run(MrcnnApp(), MrcnnFinder(), path, tmp_path / "out", {}, preview=False)
    assert summary["model"].startswith("native: U-Net")
    table = Table.read(tmp_path / "out" / "catalog.csv")
    assert table.colnames == [*COLUMN_NAMES, "class", "class_score", "group_id"]
    assert len(table) > 0 and set(table["class"]) <= set(CLASSES)
    assert np.all(np.asarray(table["class_score"]) >= 0.7)
    masks = fits.getdata(tmp_path / "out" / "segmented.fits")
    assert sorted(set(np.unique(masks)) - {0}) == list(range(1, len(table) + 1))
    # The brightest true compact source is found as compact, its mask on its peak.
    compact = np.where(tf.classes == 1, tf.field.models[0], 0)
    y, x = np.unravel_index(np.argmax(compact), compact.shape)
    row = table[int(masks[y, x]) - 1]
    assert masks[y, x] > 0 and row["class"] == "compact"


def test_numpy_network_equals_the_training_network_with_other_weights() -> None:
    """Where PyTorch is installed (the ``train`` extra): the training script's network with
    random weights and the NumPy network with the same weights give the same logits."""
    torch = pytest.importorskip("torch")
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "train_mrcnn.py"
    spec = importlib.util.spec_from_file_location("train_mrcnn", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(3)
    model = mod.UNet()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    net = mn.Net({n: (state[f"{n}.weight"], state[f"{n}.bias"]) for n, *_ in mn.LAYERS})
    x = np.random.default_rng(4).standard_normal((2, 40, 36)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x[None]))[0].numpy()
    np.testing.assert_allclose(mn.forward(net, x), want, atol=1e-4)
