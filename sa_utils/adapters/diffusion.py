"""What every noise-prediction diffusion adapter shares (chapters 7 and 8): the loss's randomness
and the forward noising ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``."""

from __future__ import annotations

import torch

from sa_utils.adapters.base import Batch, GenerativeAdapter, plain_attention


class DiffusionAdapter(GenerativeAdapter):
    """Base of :class:`~.ddpm.DDPMAdapter` and :class:`~.sd.StableDiffusionAdapter`.

    Subclasses set ``self.model`` and ``self.noise_scheduler`` (a diffusers ``DDPMScheduler``)
    and call :meth:`_init_schedule`.
    """

    def _init_schedule(self) -> None:
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.float()

    def per_sample_grad_mode(self):
        """Plain attention while vmap takes per-sample gradients (see :func:`.base.plain_attention`)."""
        return plain_attention(self.model)

    def draw_noise(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """One timestep ``t`` and one noise ``eps`` per sample (drawn on the generator's device)."""
        self.check_condition(batch["c"])
        x = batch["x"]
        dev = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(self.noise_scheduler.config.num_train_timesteps, (len(x),), generator=generator, device=dev)
        eps = torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32)
        return {**batch, "t": t.to(x.device), "eps": eps.to(x.device, x.dtype)}

    @property
    def num_train_timesteps(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)

    def null_condition(self, c: torch.Tensor) -> torch.Tensor:
        """The "no condition" input of the same shape as ``c`` (for condition dropout in the Fisher)."""
        raise NotImplementedError(f"{type(self).__name__} has no null condition; use cond_drop=0")

    def timestep_batch(
        self, sample: Batch, t: torch.Tensor, eps: torch.Tensor, drop: torch.Tensor | None = None
    ) -> Batch:
        """One sample (a batch of size 1) repeated at the timesteps ``t`` with the noises ``eps``.

        The timestep-sum Fisher (:class:`sa_utils.core.fisher.TimestepSum`) feeds such batches to
        :meth:`loss`: all noised copies of one image go through the network together, and one
        backward pass gives the gradient of their summed loss. ``drop`` (bool, per copy)
        replaces the condition by :meth:`null_condition`, as in training with condition dropout.
        """
        n = len(t)
        out = {k: v.expand(n, *v.shape[1:]) for k, v in sample.items() if k not in ("t", "eps")}
        if drop is not None and bool(drop.any()):
            c = out["c"]
            mask = drop.to(c.device).view(-1, *([1] * (c.dim() - 1)))
            out["c"] = torch.where(mask, self.null_condition(c), c)
        out["t"] = t.to(out["x"].device)
        out["eps"] = eps.to(out["x"].device, out["x"].dtype)
        return out

    def _signal_level(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``alpha_bar_t`` shaped to broadcast over ``x0``."""
        return self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)

    def noisy(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self._signal_level(x0, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps
