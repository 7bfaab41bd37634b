"""The 3D convolutional VAE and its per-sample losses.

Encoder: ``depth`` strided blocks ``Conv3d(k4, s2, p1) -> norm -> ReLU`` from D³
down to (D / 2^depth)³, then a linear map to the mean and log-variance of a
Z-dimensional Gaussian. Decoder: the mirror image with ``ConvTranspose3d(k4, s2,
p1)`` blocks, ending in Bernoulli logits over the D³ voxels. The last decoder
layer can run as an exactly equivalent 3³ convolution to 8 channels followed by a
3D pixel shuffle (:class:`SubPixelConvTranspose3d`), which is several times faster
on CPUs for one output channel.

With ``model.pose_head`` the VAE also carries an orientation head: a small MLP on the
flattened encoder output (the features ``to_stats`` reads, layer-normalized) giving 24
logits over the elements of O (:meth:`VAE.pose_logits`; logit ``r`` says the grid shown
is ``r·x`` for a grid ``x`` in the model's frame, the index
:func:`orient3d.search.score_orientations` uses). It is built after every other
layer, so the VAE's own initialization does not change, and its parameters do not
require gradients outside its own fit after training (:mod:`orient3d.training.pose_head`):
the VAE's loss never reaches it.

All per-sample terms are sums over voxels / latent dimensions, in nats:
``neg_elbo = recon + beta * kl``. The training loss is their mean over the batch.
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orient3d.config import ModelConfig

__all__ = [
    "POSE_CLASSES",
    "VAE",
    "SubPixelConvTranspose3d",
    "VAEOutput",
    "pixel_shuffle_3d",
    "recon_loss",
]

POSE_CLASSES = 24  # the orientation head's logits: one per element of O (group order)
POSE_HIDDEN = 512  # hidden units of the orientation head's MLP


@dataclass
class VAEOutput:
    """What a forward pass returns. Per-sample tensors are ``(B,)``."""

    logits: Tensor  # (B, D, D, D) Bernoulli logits
    mu: Tensor  # (B, Z)
    logvar: Tensor  # (B, Z)
    z: Tensor  # (B, Z) the latent decoded (mu when deterministic)
    recon: Tensor  # (B,) reconstruction term, -log p(x | z)
    kl: Tensor  # (B,) KL(q(z | x) || N(0, I))
    neg_elbo: Tensor  # (B,) recon + beta * kl

    @property
    def loss(self) -> Tensor:
        """The scalar training loss: mean negative ELBO over the batch."""
        return self.neg_elbo.mean()


def pixel_shuffle_3d(x: Tensor, r: int = 2) -> Tensor:
    """``(B, C * r³, D, H, W) -> (B, C, r D, r H, r W)``; channel ``c r³ + (a r + b) r + e``
    goes to output offset ``(a, b, e)``."""
    b, c8, d, h, w = x.shape
    c = c8 // r**3
    x = x.reshape(b, c, r, r, r, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, D, r, H, r, W, r)
    return x.reshape(b, c, d * r, h * r, w * r)


# For ConvTranspose(k4, s2, p1), output 2m + a reads input m + t - 1 through tap
# k = _TAP[a][t] of the 4-tap kernel (None: no tap).
_TAP: tuple[tuple[int | None, ...], ...] = ((3, 1, None), (None, 2, 0))


class SubPixelConvTranspose3d(nn.Module):
    """Exactly ``ConvTranspose3d(cin, cout, 4, stride=2, padding=1)``, computed as a
    3³ convolution to ``8 * cout`` channels and a 3D pixel shuffle.

    The parameters are those of the transposed convolution (``weight`` of shape
    ``(cin, cout, 4, 4, 4)`` and ``bias``), so the two are interchangeable and
    checkpoints keep their meaning; the 3³ kernel is assembled on each call.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        ref = nn.ConvTranspose3d(cin, cout, 4, stride=2, padding=1)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())  # type: ignore[union-attr]
        self.cin, self.cout = cin, cout
        # Gather index: for each (parity, tap) the source tap, or 4 (a zero pad).
        idx = torch.full((2, 3), 4, dtype=torch.long)
        for a in range(2):
            for t in range(3):
                k = _TAP[a][t]
                if k is not None:
                    idx[a, t] = k
        self.register_buffer("_idx", idx, persistent=False)

    def conv_weight(self) -> Tensor:
        """The ``(8 * cout, cin, 3, 3, 3)`` kernel of the equivalent convolution."""
        w = F.pad(self.weight, (0, 1, 0, 1, 0, 1))  # (cin, cout, 5, 5, 5), index 4 is 0
        i = typing.cast(Tensor, self._idx)
        # (cin, cout, 2, 3, 2, 3, 2, 3) over (a, tx, b, ty, e, tz)
        w = w[:, :, i[:, :, None, None, None, None], i[None, None, :, :, None, None], i]
        w = w.permute(1, 2, 4, 6, 0, 3, 5, 7)  # (cout, a, b, e, cin, tx, ty, tz)
        return w.reshape(self.cout * 8, self.cin, 3, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv3d(x, self.conv_weight(), padding=1)
        y = pixel_shuffle_3d(y)
        return y + self.bias.view(1, -1, 1, 1, 1)


def _norm(kind: str, ch: int) -> nn.Module:
    norms = {
        "batch": lambda: nn.BatchNorm3d(ch),
        "group": lambda: nn.GroupNorm(min(8, ch), ch),
        "none": nn.Identity,
    }
    return norms[kind]()


def recon_loss(logits: Tensor, x: Tensor, kind: str = "bce", gamma: float = 0.97) -> Tensor:
    """Per-sample reconstruction loss ``(B,)`` summed over voxels, in float32.

    ``bce``: ``-log p(x | z)`` under independent Bernoullis. ``weighted_bce``: Brock
    et al. 2016, ``-[gamma x log p + (1 - gamma)(1 - x) log(1 - p)]``, which weighs
    missed occupied voxels (false negatives) by ``gamma``.
    """
    logits = logits.float()
    x = x.float()
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "weighted_bce":
        per = -(gamma * x * F.logsigmoid(logits) + (1 - gamma) * (1 - x) * F.logsigmoid(-logits))
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}")
    return per.flatten(1).sum(dim=1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-sample ``KL(N(mu, exp(logvar)) || N(0, I))``, ``(B,)``."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


class VAE(nn.Module):
    """A 3D convolutional VAE on ``(B, D, D, D)`` grids (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, res: int) -> None:
        super().__init__()
        depth = cfg.depth or int(math.log2(res)) - 1
        if res % (2**depth) or res // 2**depth < 1:
            raise ValueError(f"res {res} cannot be halved {depth} times")
        self.cfg, self.res, self.depth = cfg, res, depth
        chans = [min(cfg.width * 2**i, cfg.max_width) for i in range(depth)]
        self.bottom = res // 2**depth
        enc: list[nn.Module] = []
        cin = 1
        for c in chans:
            enc += [nn.Conv3d(cin, c, 4, 2, 1, bias=cfg.norm == "none"), _norm(cfg.norm, c)]
            enc.append(nn.ReLU(inplace=True))
            cin = c
        self.encoder = nn.Sequential(*enc)
        flat = chans[-1] * self.bottom**3
        self.to_stats = nn.Linear(flat, 2 * cfg.latent)
        self.from_z = nn.Linear(cfg.latent, flat)
        dec: list[nn.Module] = []
        rev = chans[::-1]
        for cin_, cout in itertools.pairwise(rev):
            dec.append(nn.ConvTranspose3d(cin_, cout, 4, 2, 1, bias=cfg.norm == "none"))
            dec += [_norm(cfg.norm, cout), nn.ReLU(inplace=True)]
        last: nn.Module = (
            SubPixelConvTranspose3d(rev[-1], 1)
            if cfg.subpixel
            else nn.ConvTranspose3d(rev[-1], 1, 4, 2, 1)
        )
        if cfg.init_occupancy > 0:
            p = cfg.init_occupancy
            nn.init.constant_(typing.cast(Tensor, last.bias), math.log(p / (1 - p)))
        self.decoder = nn.Sequential(*dec, last)
        self.top_channels = rev[0]
        self.channels_last = False
        # last, so that the layers above draw the same initial weights with or without it
        self.pose_head: nn.Sequential | None = None
        if cfg.pose_head:
            self.pose_head = nn.Sequential(
                nn.LayerNorm(flat),  # the encoder's scale drifts while the VAE trains
                nn.Linear(flat, POSE_HIDDEN),
                nn.ReLU(),
                nn.Linear(POSE_HIDDEN, POSE_CLASSES),
            )
            self.pose_head.requires_grad_(False)  # fitted on its own (training.pose_head)

    def features(self, x: Tensor) -> Tensor:
        """``(B, D, D, D) -> (B, F)``: the flattened encoder output, ``F = C d³``."""
        h = self.encoder(x.unsqueeze(1).to(self._param_dtype()))  # (B, C, d, d, d)
        return h.flatten(1)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, D, D, D) -> mu (B, Z), logvar (B, Z)``."""
        mu, logvar = self.to_stats(self.features(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def pose_logits(self, x: Tensor) -> Tensor:
        """``(B, D, D, D) -> (B, 24)``: the orientation head's logits over O for grids as
        shown (see the module docstring). Needs ``model.pose_head = true``."""
        return self.head_logits(self.features(x))

    def head_logits(self, features: Tensor) -> Tensor:
        """``(B, F) -> (B, 24)``: the orientation head on encoder features, in float32."""
        if self.pose_head is None:
            raise ValueError("this model has no orientation head (model.pose_head = false)")
        dtype = typing.cast(nn.Linear, self.pose_head[1]).weight.dtype
        return typing.cast(Tensor, self.pose_head(features.to(dtype))).float()

    def decode(self, z: Tensor) -> Tensor:
        """``(B, Z) -> logits (B, D, D, D)``."""
        h = self.from_z(z).view(-1, self.top_channels, self.bottom, self.bottom, self.bottom)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last_3d)
        return self.decoder(F.relu(h)).squeeze(1)

    def forward(
        self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> VAEOutput:
        """Encode, draw ``z`` (or take the mean when ``sample`` is False), decode, score."""
        mu, logvar = self.encode(x)
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * (0.5 * logvar).exp()
        else:
            z = mu
        logits = self.decode(z)
        recon = recon_loss(logits, x, self.cfg.recon, self.cfg.gamma)
        kl = kl_standard_normal(mu, logvar)
        return VAEOutput(logits, mu, logvar, z, recon, kl, recon + self.cfg.beta * kl)

    def use_channels_last(self, on: bool = True) -> VAE:
        """Keep conv weights and activations in the channels_last_3d memory format."""
        self.channels_last = on
        fmt = torch.channels_last_3d if on else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    def _param_dtype(self) -> torch.dtype:
        return self.to_stats.weight.dtype
