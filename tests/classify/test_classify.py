"""The classifier: features and inference on a simulated field (pinned values), the NumPy tree
ensemble against hand-computed scores, and ``classify`` on and off in an app run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from caesar_rest.apps.program import run
from caesar_rest.apps.sep_app import SepApp
from caesar_rest.apps.sep_run import FINDER as SEP
from caesar_rest.catalogue.preview import CLASS_COLOURS, class_colours
from caesar_rest.catalogue.schema import CLASSES, COLUMN_NAMES, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import make_table
from caesar_rest.classify import classify, predict
from caesar_rest.classify.features import (
    FEATURE_NAMES,
    STAMP_SIDE,
    find_islands,
    row_features,
    stamps,
)
from caesar_rest.classify.model import TreeEnsemble, load, save, shipped, shipped_classifier
from caesar_rest.classify.simfields import make_field, write_field
from caesar_rest.imaging import load_image

# Islands of simulated field 7 (256 x 256) and their true classes.
ISLANDS = {16: "compact", 36: "extended-multisland", 18: "extended"}


@pytest.fixture(scope="module")
def field7(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("field") / "field7.fits"
    write_field(make_field(7, 256), str(path))
    return path


def _rows(path: Path) -> tuple[object, object, Table]:
    image = load_image(path)
    isl = find_islands(image)
    ids = list(ISLANDS)
    table = make_table(
        {
            "x": isl.cx[ids],
            "y": isl.cy[ids],
            "peak_flux": isl.peak[ids] * isl.median_rms,
        }
    )
    return image, isl, table


def test_islands_and_features_are_pinned(field7: Path) -> None:
    image, isl, table = _rows(field7)
    assert len(isl.npix) - 1 == 43
    assert int((isl.peak >= 100).sum()) == 1
    assert isl.peak[16] == pytest.approx(186.904251, abs=1e-5)
    assert (isl.cx[16], isl.cy[16]) == pytest.approx((79.642199, 92.821400), abs=1e-5)
    feats = row_features(image, table, isl)
    assert feats.shape == (3, len(FEATURE_NAMES))
    expected_first = [
        [1.049611, 1.053566, 0.621414, 0.244262, 0.005455, 0.0],
        [1.590383, 1.590383, 0.672069, 0.819552, 0.241706, 0.0],
        [1.140987, 1.142713, 1.176222, 0.410128, 0.844267, 0.0],
    ]
    np.testing.assert_allclose(feats[:, :6], expected_first, atol=2e-6)
    # Context: the bright source itself has no other bright source (missing), and the rms
    # around it is 16.7 times the median (its sidelobes); the others see it 27-33 beams away.
    expected_context = [
        [-9.0, -9.0, -9.0, 16.672789],
        [1.51914, -0.681237, 0.872931, 0.854986],
        [1.439809, -1.130632, 0.566353, 1.381498],
    ]
    np.testing.assert_allclose(feats[:, 13:17], expected_context, atol=2e-6)
    # The same input gives the same features.
    np.testing.assert_array_equal(feats, row_features(image, table, find_islands(image)))


def test_shipped_model_classifies_the_truth(field7: Path) -> None:
    image, isl, table = _rows(field7)
    names, scores, groups = classify(image, table, islands=isl)
    assert list(names) == list(ISLANDS.values())
    # The one multi-island row is a group of its own (its partners are not in this table).
    assert list(groups) == [-1, 1, -1]
    np.testing.assert_allclose(scores, [0.9895, 0.9797, 0.9994], atol=1e-4)
    # A truncated row is flagged (the rule); its score stays the model's for its class.
    table["flags"][0] = FLAG_TRUNCATED
    names2, scores2, _ = classify(image, table, islands=isl)
    assert list(names2) == ["flagged", *list(ISLANDS.values())[1:]]
    assert scores2[0] == pytest.approx(0.9874, abs=1e-4)
    assert shipped().features == FEATURE_NAMES
    # The shipped weights: the row model and the pair model (no image model, see the docs).
    assert shipped_classifier().pairs is not None and shipped_classifier().image is None
    assert set(shipped().classes) == set(CLASSES) - {"flagged"}


def _stump(feature: int, thr: float, lo: float, hi: float) -> dict[str, list[float]]:
    return {"feature": [feature, -1, -1], "threshold": [thr, 0, 0], "value": [0, lo, hi]}


def test_tree_ensemble_matches_hand_computation(tmp_path: Path) -> None:
    """Two classes, one stump each: raw = init + lr * leaf; softmax."""
    trees = [_stump(0, 0.5, -1.0, 2.0), _stump(1, 3.0, 0.5, -0.5)]
    feature, threshold, value, left, right, roots = [], [], [], [], [], []
    for k, t in enumerate(trees):
        off = 3 * k
        roots.append(off)
        feature += t["feature"]
        threshold += t["threshold"]
        value += t["value"]
        left += [off + 1, off + 1, off + 2]
        right += [off + 2, off + 1, off + 2]
    model = TreeEnsemble(
        classes=("a", "b"),
        features=("f0", "f1"),
        init=np.array([0.1, -0.2]),
        learning_rate=0.5,
        roots=np.array(roots),
        tree_class=np.array([0, 1]),
        feature=np.array(feature),
        threshold=np.array(threshold, dtype=float),
        left=np.array(left),
        right=np.array(right),
        value=np.array(value, dtype=float),
        depth=1,
    )
    x = np.array([[0.5, 3.0], [0.6, 4.0]])  # <= goes left, as in scikit-learn
    raw = model.raw(x)
    np.testing.assert_allclose(raw, [[0.1 - 0.5, -0.2 + 0.25], [0.1 + 1.0, -0.2 - 0.25]])
    p = model.proba(x)
    np.testing.assert_allclose(p[:, 0], 1 / (1 + np.exp(raw[:, 1] - raw[:, 0])))
    save(model, tmp_path / "m.npz")
    again = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.proba(x), p)
    names, scores = predict(x, None, again)
    assert list(names) == ["b", "a"]


def test_classify_on_and_off_in_a_run(field7: Path, tmp_path: Path) -> None:
    app = SepApp()
    assert "--classify=false" in app.option_args({"classify": False})
    assert app.option_args({"classify": True}) == ["--classify"]
    desc = app.describe()["classify"]
    assert desc["type"] == "none" and all(c in desc["description"] for c in CLASSES)
    on = run(app, SEP, field7, tmp_path / "on", {}, preview=False)
    off = run(app, SEP, field7, tmp_path / "off", {"classify": False}, preview=False)
    t_on = Table.read(tmp_path / "on" / "catalog.csv", format="ascii.csv")
    t_off = Table.read(tmp_path / "off" / "catalog.csv", format="ascii.csv")
    assert t_off.colnames == list(COLUMN_NAMES)
    assert t_on.colnames == [*COLUMN_NAMES, "class", "class_score", "group_id"]
    assert len(t_on) == len(t_off) == on["n_sources"] == off["n_sources"]
    assert set(t_on["class"]) <= set(CLASSES)
    assert np.all((t_on["class_score"] > 0) & (t_on["class_score"] <= 1))
    assert on["classes"] == {c: int((t_on["class"] == c).sum()) for c in CLASSES}
    # group_id: a number from 1 for every multi-island row, -1 for the others.
    multi = t_on["class"] == "extended-multisland"
    assert np.all((t_on["group_id"] >= 1) == multi) and np.all(t_on["group_id"][~multi] == -1)
    assert on["multisland_objects"] == max(int(t_on["group_id"].max()), 0)
    assert "classes" not in off and "classify" in on["timings_s"]
    doc = json.loads((tmp_path / "on" / "catalog.json").read_text())
    assert [c["name"] for c in doc["columns"]][-3:] == ["class", "class_score", "group_id"]
    assert doc["sources"][0]["class"] == t_on["class"][0]
    vot = Table.read(tmp_path / "on" / "catalog.vot", format="votable")
    assert list(vot["class"]) == list(t_on["class"])
    # The preview colours rows by class.
    assert class_colours(t_on) == [CLASS_COLOURS[str(c)] for c in t_on["class"]]
    assert class_colours(t_off) == "cyan"


def test_islands_by_bands_equal_the_whole_image_labels(
    field7: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The islands are made band by band of rows (no image-sized map); cutting the field into
    bands of 7 rows gives the labels, numbering and features of one whole-image
    ``ndimage.label``."""
    from scipy import ndimage

    from caesar_rest.classify import features

    image = load_image(field7)
    whole = find_islands(image)
    bands = features._bands
    monkeypatch.setattr(features, "_bands", lambda ny, nx, pixels=0: bands(ny, nx, 7 * nx))
    banded = find_islands(image)
    assert len(features._bands(256, 256)) == 37
    expected, n = ndimage.label(whole.sig > 3.0, structure=np.ones((3, 3), dtype=bool))
    assert n == 43
    np.testing.assert_array_equal(banded.labels, expected)
    np.testing.assert_array_equal(banded.npix, whole.npix)
    np.testing.assert_array_equal(banded.flux, whole.flux)
    assert banded.median_rms == whole.median_rms == float(np.median(whole.rms))
    _, _, table = _rows(field7)
    np.testing.assert_array_equal(
        row_features(image, table, banded), row_features(image, table, whole)
    )


def test_model_scores_by_chunks_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores are computed by chunks of rows (bounded memory on large catalogues): the values
    of all rows at once (to the rounding of NumPy's sums over trees, whose order depends on
    the number of rows) and the same classes."""
    from caesar_rest.classify import model

    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, (50, len(FEATURE_NAMES)))
    ens = shipped()
    whole = ens.raw(x)
    monkeypatch.setattr(model, "ROW_CHUNK", 7)
    chunked = ens.raw(x)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(chunked.argmax(axis=1), whole.argmax(axis=1))


def test_stamps_and_galaxy_truth(field7: Path) -> None:
    image, isl, table = _rows(field7)
    cut = stamps(image, table, isl).reshape(-1, STAMP_SIDE, STAMP_SIDE)
    mid = STAMP_SIDE // 2
    # Over the peak's significance: 1 at the centre, within the clip everywhere.
    np.testing.assert_allclose(cut[:, mid, mid], 1.0)
    assert np.all(np.abs(cut) <= 2.0)
    # The compact source (row 0) falls below half its peak one beam away on every side.
    assert np.all(cut[0, mid, [mid - 2, mid + 2]] < 0.5) and np.all(
        cut[0, [mid - 2, mid + 2], mid] < 0.5
    )
    field = make_field(7, 256)
    gal = field.galaxy_at(np.asarray(table["x"]), np.asarray(table["y"]))
    assert list(gal) == [0, 1, 0]  # the multi-island row is galaxy 1, the only one
    assert set(np.unique(field.galaxies)) == {0, 1}
