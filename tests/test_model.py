"""The VAE: shapes, the exact sub-pixel layer, per-sample losses against slow versions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from orient3d.config import ModelConfig
from orient3d.model import VAE, SubPixelConvTranspose3d, kl_standard_normal, recon_loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subpixel_layer_equals_conv_transpose(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = SubPixelConvTranspose3d(6, 3).to(dtype)
    ref = torch.nn.ConvTranspose3d(6, 3, 4, stride=2, padding=1).to(dtype)
    ref.weight.data.copy_(layer.weight.data)
    ref.bias.data.copy_(layer.bias.data)  # type: ignore[union-attr]
    x = torch.randn(2, 6, 5, 4, 3, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(layer(x), ref(x), atol=tol)
    # Gradients agree too.
    layer(x).square().sum().backward()
    ref(x).square().sum().backward()
    assert torch.allclose(layer.weight.grad, ref.weight.grad, atol=tol * 100)  # type: ignore[arg-type]


@pytest.mark.parametrize("res", [16, 32])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_shapes(res: int, norm: str) -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=5, width=4, norm=norm), res)  # type: ignore[arg-type]
    x = (torch.rand(3, res, res, res) < 0.2).float()
    out = model(x)
    assert out.logits.shape == (3, res, res, res)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 5)
    for t in (out.recon, out.kl, out.neg_elbo):
        assert t.shape == (3,) and torch.isfinite(t).all()
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_subpixel_model_equals_plain_model() -> None:
    torch.manual_seed(0)
    a = VAE(ModelConfig(latent=4, width=4, subpixel=True), 16).eval()
    b = VAE(ModelConfig(latent=4, width=4, subpixel=False), 16).eval()
    b.load_state_dict(a.state_dict())
    x = (torch.rand(2, 16, 16, 16) < 0.3).float()
    assert torch.allclose(a(x, sample=False).logits, b(x, sample=False).logits, atol=1e-5)


def test_per_sample_terms_match_slow_formulas() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    x = (torch.rand(3, 4, 4, 4) < 0.5).double()
    p = torch.sigmoid(logits)
    for b in range(3):
        slow = -(x[b] * p[b].log() + (1 - x[b]) * (1 - p[b]).log()).sum()
        assert torch.isclose(recon_loss(logits, x)[b].double(), slow, rtol=1e-5)
        g = 0.9
        slow_w = -(g * x[b] * p[b].log() + (1 - g) * (1 - x[b]) * (1 - p[b]).log()).sum()
        got = recon_loss(logits, x, "weighted_bce", g)[b].double()
        assert torch.isclose(got, slow_w, rtol=1e-5)
    mu, logvar = torch.randn(2, 3), torch.randn(2, 3)
    for b in range(2):
        q = torch.distributions.Normal(mu[b], (0.5 * logvar[b]).exp())
        ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum()
        assert torch.isclose(kl_standard_normal(mu, logvar)[b], ref, rtol=1e-5)


def test_deterministic_scores_and_beta() -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=4, width=4, beta=2.5), 16).eval()
    x = (torch.rand(2, 16, 16, 16) < 0.2).float()
    a, b = model(x, sample=False), model(x, sample=False)
    assert torch.equal(a.neg_elbo, b.neg_elbo)
    assert torch.equal(a.z, a.mu)
    assert torch.allclose(a.neg_elbo, a.recon + 2.5 * a.kl)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model(x, generator=g1).z, model(x, generator=g2).z)
    assert not torch.equal(model(x).z, a.mu)


def test_untrained_model_scores_near_log2_per_voxel() -> None:
    """At initialization the decoder is near p = 1/2, so recon ~ D³ log 2."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=4, width=4), 16).eval()
    x = (torch.rand(2, 16, 16, 16) < 0.1).float()
    out = model(x, sample=False)
    per_voxel = out.recon / 16**3
    assert ((per_voxel - math.log(2)).abs() < 0.2).all()
    assert F.mse_loss(torch.sigmoid(out.logits), torch.full_like(x, 0.5)) < 0.05


def test_channels_last_gives_the_same_output() -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=4, width=4), 16).eval()
    x = (torch.rand(2, 16, 16, 16) < 0.2).float()
    ref = model(x, sample=False).logits
    model.use_channels_last()
    assert torch.allclose(model(x, sample=False).logits, ref, atol=1e-5)


def test_init_occupancy_starts_the_output_at_the_data_occupancy() -> None:
    """A fresh model with init_occupancy p predicts about p, not 0.5, per voxel."""
    torch.manual_seed(0)
    plain = VAE(ModelConfig(width=4, latent=4), 16).eval()
    torch.manual_seed(0)
    primed = VAE(ModelConfig(width=4, latent=4, init_occupancy=0.07), 16).eval()
    x = (torch.rand(8, 16, 16, 16) < 0.07).float()
    with torch.no_grad():
        p_plain = torch.sigmoid(plain(x, sample=False).logits).mean()
        p_primed = torch.sigmoid(primed(x, sample=False).logits).mean()
    assert abs(float(p_plain) - 0.5) < 0.1
    assert abs(float(p_primed) - 0.07) < 0.03
    # only the output bias differs
    diff = [k for k, v in plain.state_dict().items() if not torch.equal(v, primed.state_dict()[k])]
    last = f"decoder.{len(plain.decoder) - 1}.bias"
    assert diff == [last]
