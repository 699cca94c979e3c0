"""The training objectives of the tiny pipeline: the VAE's and Stable Diffusion's noise prediction.

``scripts/train_tiny_sd.py`` trains with them; the Part III SD adapter can use the same
per-sample noise-prediction loss, which is the (weighted) ELBO that Selective Amnesia needs.
Every function takes its randomness from an explicit ``torch.Generator`` so that a batch and
a generator state fix the loss exactly (resume and Fisher estimates rely on that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tokenize(tokenizer, captions: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Token ids ``[B, max_length]``, padded as SD's pipeline pads (``<|endoftext|>`` up to the
    tokenizer's ``model_max_length``, 77 for SD)."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def vae_loss(
    vae, images: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared reconstruction error plus ``kl_weight`` times the KL per latent element.

    Stable Diffusion's VAE adds a perceptual and an adversarial term; at 32x32 on flat-coloured
    shapes the squared error alone gives sharp enough reconstructions.
    """
    posterior = vae.encode(images).latent_dist
    z = posterior.sample(generator=generator)
    recon = vae.decode(z).sample
    mse = F.mse_loss(recon.float(), images.float())
    kl = posterior.kl().mean() / z[0].numel()
    return mse + kl_weight * kl, {"mse": float(mse.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def latent_scaling_factor(vae, images: torch.Tensor) -> float:
    """``1 / std`` of the VAE's latent means on ``images`` (SD v1's 0.18215 was found the same way)."""
    return float(1.0 / vae.encode(images).latent_dist.mean.float().std().clamp_min(1e-6))


def noise_prediction_loss(
    unet,
    encoder_hidden_states: torch.Tensor,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler,
) -> torch.Tensor:
    """Per-sample ``|eps - eps_theta(z_t, t, c)|^2`` averaged over latent elements: shape ``[B]``.

    ``latents`` are already multiplied by the VAE's ``scaling_factor``; ``scheduler`` is the
    training ``DDPMScheduler`` whose ``add_noise`` makes ``z_t``.
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states).sample
    return (pred.float() - noise.float()).pow(2).flatten(1).mean(1)
