"""Known answers of shape-latent invariance, and the chunked sums against a slow loop."""

from __future__ import annotations

import numpy as np
import pytest

from orient3d.metrics import latent_invariance


def test_invariant_encoder_scores_zero(rng: np.random.Generator) -> None:
    z = np.repeat(rng.normal(size=(30, 1, 8)), 24, axis=1)
    assert latent_invariance(z)["invariance"] == 0.0


def test_random_latents_score_near_one(rng: np.random.Generator) -> None:
    res = latent_invariance(rng.normal(size=(60, 8, 16)))
    assert 0.95 < res["invariance"] < 1.05


def test_equals_slow_loop_and_subsamples(rng: np.random.Generator) -> None:
    z = rng.normal(size=(5, 3, 4)) + np.arange(5)[:, None, None]
    within, between = [], []
    for i in range(5):
        for v in range(3):
            for j in range(5):
                for w in range(3):
                    d = float(np.linalg.norm(z[i, v] - z[j, w]))
                    if i == j and v != w:
                        within.append(d)
                    elif i != j:
                        between.append(d)
    res = latent_invariance(z)
    assert res["within"] == pytest.approx(np.mean(within))
    assert res["between"] == pytest.approx(np.mean(between))
    sub = latent_invariance(z, max_objects=3, rng=np.random.default_rng(0))
    assert sub["n_objects"] == 3


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="N, V, Z"):
        latent_invariance(np.zeros((4, 1, 3)))
