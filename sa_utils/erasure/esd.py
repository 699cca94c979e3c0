"""Erased Stable Diffusion (ESD; Gandikota, Materzynska, Fiotto-Kaufman and Bau, ICCV 2023):
fine-tune the UNet so that, on the concept's own prompt, it predicts the frozen model's noise
*guided away* from the concept.

Each iteration draws a latent ``x_t`` from the frozen model itself, prompted with the concept
(``num_inference_steps`` sampler steps at guidance ``guidance_scale``, stopped after a random
number of them), and trains the edited UNet towards

    target = eps*(x_t, c_from, t) - negative_guidance * (eps*(x_t, c, t) - eps*(x_t, "", t))

with a mean squared error, where ``eps*`` is the frozen UNet and ``c_from = c`` unless given
(``erase_from``). With ``negative_guidance = 2`` (the default of the authors' current script) the
target is ``eps*(x_t, "") - (eps*(x_t, c) - eps*(x_t, ""))``: the paper's negative guidance with
``eta = 1``. This follows the authors' diffusers script (github rohitgandikota/erasing,
``esd_sd.py`` and ``utils/sd_utils.py``): batch 1, Adam at 5e-5, 200 iterations, the pipeline's
own sampler, and two ways to choose what trains:

* ``esd-x``: every ``Linear`` / ``Conv2d`` inside cross-attention (``attn2``): for a concept named in prompts;
* ``esd-u``: every ``Linear`` / ``Conv2d`` outside cross-attention: for a concept that should go
  whatever the prompt says (nudity).

The randomness of iteration ``k`` (which sampler step, the starting noise) comes from
``step_generator(seed, k)``, so a run resumed from its checkpoint continues exactly.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sa_utils.adapters.sd import StableDiffusionAdapter
from sa_utils.progress import progress_bar
from sa_utils.runtime import step_generator
from sa_utils.storage.train_state import load_train_state, save_train_state

METHODS = ("esd-x", "esd-u")
CHECKPOINT = "checkpoint.safetensors"


@dataclass(frozen=True)
class ESDConfig:
    """The authors' defaults (``esd_sd.py``)."""

    erase: str
    method: str = "esd-x"
    erase_from: str | None = None
    iterations: int = 200
    lr: float = 5e-5
    negative_guidance: float = 2.0
    guidance_scale: float = 3.0
    num_inference_steps: int = 50
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self):
        if not isinstance(self.erase, str) or not self.erase.strip():
            raise ValueError(f"ESD needs a non-empty concept to erase, got {self.erase!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("iterations", "num_inference_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def esd_trainable(unet: nn.Module, method: str) -> list[str]:
    """Set ``requires_grad`` for ``method`` (``Linear`` and ``Conv2d`` weights and biases inside
    ``attn2`` for esd-x, outside it for esd-u; nothing else); return the trained names."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    unet.requires_grad_(False)
    names = []
    for mod_name, module in unet.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        cross = ".attn2." in f".{mod_name}."
        if cross == (method == "esd-x"):
            for n, p in module.named_parameters(recurse=False):
                p.requires_grad_(True)
                names.append(f"{mod_name}.{n}")
    return names


@torch.no_grad()
def esd_sample(
    base: nn.Module,
    scheduler,
    cond: torch.Tensor,
    null: torch.Tensor,
    config: ESDConfig,
    generator: torch.Generator,
    shape: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, t)``: the frozen UNet's sample of the concept after a random number of its sampler's
    steps (classifier-free guidance ``config.guidance_scale``), and the timestep it stopped at."""
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(config.num_inference_steps)
    stop = int(torch.randint(0, config.num_inference_steps, (1,), generator=generator))
    dev = cond.device
    x = torch.randn(shape, generator=generator).to(dev) * sched.init_noise_sigma
    both = torch.cat([null, cond])
    for t in sched.timesteps[:stop]:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        e_null, e_cond = base(inp, t, encoder_hidden_states=both).sample.chunk(2)
        x = sched.step(e_null + config.guidance_scale * (e_cond - e_null), t, x).prev_sample
    return x, sched.timesteps[stop]


@torch.no_grad()
def esd_target(
    base: nn.Module,
    x_t: torch.Tensor,
    t,
    cond: torch.Tensor,
    null: torch.Tensor,
    cond_from: torch.Tensor,
    negative_guidance: float,
) -> torch.Tensor:
    """``eps*(x_t, c_from, t) - negative_guidance * (eps*(x_t, c, t) - eps*(x_t, "", t))``."""
    e_c = base(x_t, t, encoder_hidden_states=cond).sample
    e_0 = base(x_t, t, encoder_hidden_states=null).sample
    e_from = e_c if cond_from is cond else base(x_t, t, encoder_hidden_states=cond_from).sample
    return e_from - negative_guidance * (e_c - e_0)


@dataclass
class ESDResult:
    losses: list[float]
    seconds: float
    trained: list[str]
    resumed_from: int


def erase_esd(
    adapter: StableDiffusionAdapter, config: ESDConfig, run_dir: str | Path | None = None, progress: bool = True
) -> ESDResult:
    """Train ``adapter.model`` (the pipeline's UNet) with ESD, in place; with ``run_dir``, checkpoint
    every ``config.checkpoint_every`` iterations and resume from there."""
    unet = adapter.model
    base = copy.deepcopy(unet).eval().requires_grad_(False)  # the frozen original, as the authors keep it
    trained = esd_trainable(unet, config.method)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    cond = adapter.encode_prompts([config.erase])
    null = adapter.encode_prompts([""])
    cond_from = adapter.encode_prompts([config.erase_from]) if config.erase_from else cond
    cfg = unet.config
    shape = (1, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    losses: list[float] = []
    start = 0
    ckpt = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if ckpt is not None and ckpt.exists():
        _, meta = load_train_state(ckpt, {"model": unet}, {"optim": optimizer}, device=adapter.device)
        losses, start = list(meta["losses"]), int(meta["iteration"])
    started = time.perf_counter()
    unet.train()
    bar = progress_bar(total=config.iterations, initial=start, desc=f"ESD ({config.method})", disable=not progress)
    for it in range(start, config.iterations):
        g = step_generator(config.seed, it)
        x_t, t = esd_sample(base, adapter.pipeline.scheduler, cond_from, null, config, g, shape)
        target = esd_target(base, x_t, t, cond, null, cond_from, config.negative_guidance)
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=cond_from).sample, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
        done = it + 1
        if ckpt is not None and (done % config.checkpoint_every == 0 or done == config.iterations):
            save_train_state(
                ckpt,
                {"model": unet},
                {"optim": optimizer},
                metadata={"losses": losses, "iteration": done, "config": config.to_dict()},
            )
    bar.close()
    unet.eval().requires_grad_(False)
    return ESDResult(losses, time.perf_counter() - started, trained, start)
