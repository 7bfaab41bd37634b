"""Known answers of the categorical orientation prior (orient3d.prior)."""

from __future__ import annotations

import math

import pytest
import torch

from orient3d import groups
from orient3d.prior import (
    OrientationPrior,
    em_update,
    floor_probs,
    gradient_update,
    prior_entropy,
)
from orient3d.search import canonical_pose, choose

G = 24


def test_em_update_is_the_mean_posterior_floored_and_renormalized() -> None:
    post = torch.zeros(3, G, dtype=torch.float64)
    post[0, 5], post[1, 5], post[2, 7] = 1.0, 1.0, 1.0  # hard choices: 2 x pose 5, 1 x pose 7
    m = post.mean(dim=0)
    p = em_update(torch.full((G,), 1.0 / G, dtype=torch.float64), m, floor=0.01)
    want = m.clamp_min(0.01)
    want = want / want.sum()
    torch.testing.assert_close(p, want)
    assert p.min() > 0 and math.isclose(float(p.sum()), 1.0)
    assert float(p[5]) == pytest.approx((2 / 3) / (1 + 22 * 0.01))


def test_em_update_without_floor_and_step_one_is_the_mean() -> None:
    m = torch.softmax(
        torch.randn(G, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 0
    )
    p = em_update(torch.full((G,), 1.0 / G, dtype=torch.float64), m, floor=0.0)
    torch.testing.assert_close(p, m)


def test_em_update_half_step_and_unseen_rows() -> None:
    p0 = torch.full((2, G), 1.0 / G, dtype=torch.float64)
    m = torch.zeros(2, G, dtype=torch.float64)
    m[0, 3] = 1.0  # row 1 (a class not seen this epoch) is all zero
    p = em_update(p0, m, floor=0.0, step=0.5)
    assert float(p[0, 3]) == pytest.approx(0.5 + 0.5 / G)
    torch.testing.assert_close(p[1], p0[1])


def test_floor_rejects_an_impossible_floor() -> None:
    with pytest.raises(ValueError, match="floor"):
        floor_probs(torch.full((G,), 1.0 / G), 1.0 / G)


def test_gradient_update_moves_towards_the_posterior_and_stops_there() -> None:
    gen = torch.Generator().manual_seed(0)
    m = torch.softmax(torch.randn(G, dtype=torch.float64, generator=gen), dim=0)
    logits = torch.zeros(G, dtype=torch.float64)
    for _ in range(3000):
        logits = gradient_update(logits, m, lr=2.0)
    torch.testing.assert_close(torch.softmax(logits, 0), m, atol=1e-6, rtol=0)
    # At the fixed point the step is zero; with a temperature too.
    fixed = 2.0 * torch.log(m)
    torch.testing.assert_close(gradient_update(fixed, m, lr=1.0, temperature=2.0), fixed)


def test_prior_over_the_shown_frame_stays_uniform() -> None:
    """r = g·h⁻¹ is uniform when g is, whatever the canonical poses h: no reward."""
    o = groups.cube_group()
    gen = torch.Generator().manual_seed(0)
    g = torch.randint(G, (24_000,), generator=gen)
    h = torch.full_like(g, 7)  # every object shares one canonical pose
    r = o.table[g, o.inverse[h]]
    m = torch.bincount(r, minlength=G).double() / len(r)
    p = em_update(torch.full((G,), 1.0 / G, dtype=torch.float64), m, floor=1e-3)
    assert float(prior_entropy(p.log())) > math.log(G) - 0.01
    torch.testing.assert_close(canonical_pose(r, g, o), h)  # while h is one pose


def test_a_concentrated_prior_wins_ties() -> None:
    prior = OrientationPrior(G, floor=1e-3)
    poses = torch.arange(G).expand(4, G)
    prior.observe(torch.full((4, 1), 9), torch.ones(4, 1))
    prior.update()
    scores = torch.full((4, G), 100.0)  # every pose scores alike
    ch = choose(scores - prior.log_prob(poses), "hard")
    assert (ch.r == 9).all()
    # A small likelihood difference is still outweighed by the prior ...
    scores[:, 2] -= 1.0
    assert (choose(scores - prior.log_prob(poses), "hard").r == 9).all()
    # ... a large one is not.
    scores[:, 2] -= 100.0
    assert (choose(scores - prior.log_prob(poses), "hard").r == 2).all()


def test_soft_posteriors_update_the_prior_to_their_mean() -> None:
    prior = OrientationPrior(G, floor=0.0)
    q = torch.softmax(torch.randn(6, G, generator=torch.Generator().manual_seed(2)), dim=1)
    prior.observe(torch.arange(G).expand(6, G), q)
    out = prior.update()
    torch.testing.assert_close(prior.log_p()[0].exp(), q.double().mean(0), atol=1e-6, rtol=0)
    assert out["prior_top_pose"] == int(q.mean(0).argmax())
    assert out["prior_entropy"] == pytest.approx(float(prior_entropy(prior.log_p())[0]))


def test_per_class_priors_are_separate_and_round_trip() -> None:
    prior = OrientationPrior(G, n_classes=2, floor=1e-3, update="gradient", step=5.0)
    labels = torch.tensor([0, 0, 1])
    prior.observe(torch.tensor([[4], [4], [11]]), torch.ones(3, 1), labels)
    out = prior.update()
    assert out["prior_top_pose_per_class"] == [4, 11]
    lp = prior.log_prob(torch.tensor([[4, 11], [4, 11]]), torch.tensor([0, 1]))
    assert lp[0, 0] > lp[0, 1] and lp[1, 1] > lp[1, 0]
    other = OrientationPrior(G, n_classes=2, update="gradient", step=5.0)
    other.load_state_dict(prior.state_dict())
    torch.testing.assert_close(other.log_p(), prior.log_p())
    with pytest.raises(ValueError, match="shape"):
        OrientationPrior(G).load_state_dict(prior.state_dict())


def test_floor_keeps_every_pose_possible() -> None:
    prior = OrientationPrior(G, floor=1e-3)
    for _ in range(50):
        prior.observe(torch.zeros(8, 1, dtype=torch.long), torch.ones(8, 1))
        prior.update()
    p = prior.log_p()[0].exp()
    assert float(p.min()) > 0.9e-3 and float(p[0]) > 0.97
