"""The second opinion on digit images (`evaluation.features.pixels`) against scikit-learn's PCA and k-NN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rediffuse.data.images import load_images
from rediffuse.evaluation.features.pixels import COMPONENTS, NEIGHBOURS, fit_pixels


@pytest.fixture(scope="module")
def digits():
    train, heldout = load_images("digits@train"), load_images("digits@heldout")
    return train.images.float(), train.labels, heldout.images.float(), heldout.labels


def test_the_coordinates_are_scikit_learns_principal_components(digits):
    from sklearn.decomposition import PCA

    x, y, hx, _ = digits
    model = fit_pixels(x, y)
    reference = PCA(COMPONENTS, svd_solver="full").fit(x.flatten(1).double().numpy())
    ours = model.features(hx).double().numpy()
    theirs = reference.transform(hx.flatten(1).double().numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-4)  # axes agree up to sign


def test_the_vote_is_scikit_learns_nearest_neighbours_and_classifies_held_out_digits(digits):
    from sklearn.neighbors import KNeighborsClassifier

    x, y, hx, hy = digits
    model = fit_pixels(x, y, (hx, hy))
    reference = KNeighborsClassifier(NEIGHBOURS).fit(model.train.numpy(), y.numpy())
    theirs = reference.predict(model.features(hx).numpy())
    ours = model.classify(hx, chunk=100).numpy()
    # Ties (three different classes among three neighbours) may go another way in scikit-learn; count them.
    assert (ours != theirs).mean() < 0.01
    assert model.heldout_accuracy == pytest.approx(float((ours == hy.numpy()).mean()))
    assert model.heldout_accuracy >= 0.95  # 0.98 measured on the 360 held-out digits


def test_noise_blur_and_lost_classes_raise_the_frechet_distance_in_order(digits):
    from rediffuse.evaluation.metrics import frechet_distance, prdc

    x, y, hx, hy = digits
    model = fit_pixels(x, y)

    def fd(images: torch.Tensor) -> float:
        return frechet_distance(model.features(images), model.train)

    noise = torch.randn(hx.shape, generator=torch.Generator().manual_seed(0))
    found = [fd(hx), *(fd((hx + a * noise).clamp(-1, 1)) for a in (0.2, 0.5, 1.0))]
    assert found == sorted(found) and found[-1] > 4 * found[0]  # measured 0.49, 0.60, 1.30, 4.05
    assert fd(torch.nn.functional.avg_pool2d(hx, 3, 1, 1)) > 4 * found[0]  # 11.5
    half = hx[hy < 5]  # half the classes: real images, less variety
    assert fd(half) > 2 * found[0]  # 2.7
    whole, lost = prdc(model.train, model.features(hx)), prdc(model.train, model.features(half))
    assert lost["recall"] < whole["recall"] - 0.2 and abs(lost["precision"] - whole["precision"]) < 0.1


def test_images_of_another_size_are_named(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="pixels"):
        fit_pixels(x, y).features(torch.zeros(2, 1, 28, 28))
