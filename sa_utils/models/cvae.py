"""The paper's one-hot conditional MLP VAE for MNIST (chapter 2).

Encoder q(z | x, c): [x, onehot(c)] -> 512 -> 256 -> (mu, log sigma^2), z in R^8.
Decoder p(x | z, c): [z, onehot(c)] -> 256 -> 512 -> 784 Bernoulli means.
About 1.08M parameters; every weight sits in an ``nn.Linear`` used once per forward pass,
which is what makes the batched Fisher in :mod:`sa_utils.core.fisher` exact and fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CVAEConfig:
    x_dim: int = 784
    h_dims: tuple[int, int] = (512, 256)
    z_dim: int = 8
    n_classes: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CVAEConfig:
        d = dict(d)
        d["h_dims"] = tuple(d["h_dims"])
        return cls(**d)


class CVAE(nn.Module):
    def __init__(self, config: CVAEConfig = CVAEConfig()):
        super().__init__()
        self.config = config
        h1, h2 = config.h_dims
        k = config.n_classes
        self.enc1 = nn.Linear(config.x_dim + k, h1)
        self.enc2 = nn.Linear(h1, h2)
        self.enc_mu = nn.Linear(h2, config.z_dim)
        self.enc_logvar = nn.Linear(h2, config.z_dim)
        self.dec1 = nn.Linear(config.z_dim + k, h2)
        self.dec2 = nn.Linear(h2, h1)
        self.dec3 = nn.Linear(h1, config.x_dim)

    def one_hot(self, c: torch.Tensor) -> torch.Tensor:
        """One-hot codes for integer class ids (a float tensor is taken as a code already).

        Written without data-dependent checks so ``torch.func.vmap`` can trace it; class
        ids are validated where batches enter (:class:`sa_utils.adapters.VAEAdapter`).
        """
        if c.dtype.is_floating_point:
            return c
        classes = torch.arange(self.config.n_classes, device=c.device)
        return (c.unsqueeze(-1) == classes).float()

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([x.flatten(1), self.one_hot(c)], dim=1)
        h = F.relu(self.enc2(F.relu(self.enc1(h))))
        return self.enc_mu(h), self.enc_logvar(h)

    def decode_logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.one_hot(c)], dim=1)
        return self.dec3(F.relu(self.dec2(F.relu(self.dec1(h)))))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Bernoulli means, shaped like MNIST images ``[B, 1, 28, 28]``."""
        return torch.sigmoid(self.decode_logits(z, c)).view(-1, 1, 28, 28)

    def negative_elbo(self, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Per-sample negative ELBO (nats): Bernoulli reconstruction + KL(q(z|x,c) || N(0, I)).

        ``eps`` is the reparameterisation noise, passed in so the loss is a deterministic
        function of the parameters (needed for exact per-sample Fisher checks).
        """
        mu, logvar = self.encode(x, c)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decode_logits(z, c)
        rec = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return rec + kl

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(len(c), self.config.z_dim, generator=generator, device=self.enc1.weight.device)
        return self.decode(z, c)
