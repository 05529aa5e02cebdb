"""The image model (caesar_rest.classify.image_model) and the classifier's weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caesar_rest.classify.image_model import ImageModel, dihedral, from_sklearn
from caesar_rest.classify.model import Classifier, load_classifier, save
from caesar_rest.classify.training import export_gradient_boosting, fit_init


def test_dihedral_transforms() -> None:
    x = np.arange(9, dtype=np.float32).reshape(1, 9)
    seen = {tuple(dihedral(x, 3, k).ravel()) for k in range(8)}
    assert len(seen) == 8  # eight different images of an asymmetric one
    sq = x.reshape(3, 3)
    np.testing.assert_array_equal(dihedral(x, 3, 1).reshape(3, 3), np.rot90(sq))
    np.testing.assert_array_equal(dihedral(x, 3, 4).reshape(3, 3), sq[:, ::-1])


def _tiny() -> ImageModel:
    w0 = np.array([[1.0, -1.0], [0.0, 2.0], [0.5, 0.0], [0.0, 0.0]])
    w1 = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    return ImageModel(("a", "b", "c"), (w0, w1), (np.array([0.0, -0.5]), np.zeros(3)), side=2)


def test_network_by_hand_and_rotation_average() -> None:
    mdl = _tiny()
    x = np.array([[1.0, 0.5, 2.0, 0.0]], dtype=np.float32)
    h = np.maximum(x @ mdl.weights[0] + mdl.biases[0], 0.0)  # [2.0, 0.0]
    z = h @ mdl.weights[1]
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(mdl.proba_plain(x), expected)
    turned = [mdl.proba_plain(dihedral(x, 2, k)) for k in range(8)]
    np.testing.assert_allclose(mdl.proba(x), np.mean(turned, axis=0))
    assert mdl.feature_names == ("image_p_a", "image_p_b", "image_p_c")


def test_sklearn_models_exported(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = np.array(["p", "q", "r"])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)]
    mlp = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2000, random_state=0).fit(x, y)
    image = from_sklearn(mlp, side=2)
    np.testing.assert_allclose(image.proba_plain(x), mlp.predict_proba(x), atol=1e-12)
    # A two-class tree ensemble (the pair model) is exported as a two-class softmax.
    yb = x[:, 2] + 0.3 * x[:, 3] > 0
    gb = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, yb)
    pairs = fit_init(export_gradient_boosting(gb, ("a", "b", "c", "d")), gb, x)
    np.testing.assert_allclose(pairs.proba(x), gb.predict_proba(x), atol=1e-12)
    gm = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
    rows = fit_init(export_gradient_boosting(gm, ("a", "b", "c", "d")), gm, x)
    # All three in one file; float32 network weights.
    save(Classifier(rows, image, pairs), tmp_path / "w.npz")
    back = load_classifier(tmp_path / "w.npz")
    assert back.image is not None and back.pairs is not None
    np.testing.assert_array_equal(back.rows.proba(x), rows.proba(x))
    np.testing.assert_array_equal(back.pairs.proba(x), pairs.proba(x))
    np.testing.assert_allclose(back.image.proba_plain(x), mlp.predict_proba(x), atol=1e-5)
    # A file of the row model alone has neither.
    save(rows, tmp_path / "r.npz")
    alone = load_classifier(tmp_path / "r.npz")
    assert alone.image is None and alone.pairs is None
