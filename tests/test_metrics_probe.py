"""Known answers of the linear probe."""

from __future__ import annotations

import numpy as np

from orient3d.metrics import linear_probe


def test_separable_code_is_read_perfectly(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 4, size=200)
    z = rng.normal(size=(200, 6)) * 0.3
    z[np.arange(200), labels] += 3.0  # class k lives along axis k
    res = linear_probe(z, labels, seed=0)
    assert res["test_accuracy"] >= 0.97 and res["train_accuracy"] >= 0.97
    assert res["n_classes"] == 4 and res["n_test"] == 60


def test_noise_is_read_at_chance(rng: np.random.Generator) -> None:
    n = 600
    labels = rng.integers(0, 3, size=n)
    res = linear_probe(rng.normal(size=(n, 8)), labels, seed=1)
    tol = 4 * np.sqrt((1 / 3) * (2 / 3) / res["n_test"])
    assert abs(res["test_accuracy"] - 1 / 3) < tol
    assert abs(res["chance"] - 1 / 3) < tol


def test_views_are_split_by_object(rng: np.random.Generator) -> None:
    labels = np.array(["a", "b"] * 20)
    z = rng.normal(size=(40, 5, 3)) + (labels == "a")[:, None, None] * 4.0
    res = linear_probe(z, labels, test_fraction=0.25, seed=3)
    assert res["n_train"] + res["n_test"] == 40 and res["n_test"] == 10
    assert res["test_accuracy"] == 1.0
    assert linear_probe(z, labels, seed=3) == linear_probe(z, labels, seed=3)
