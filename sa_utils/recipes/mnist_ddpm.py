"""Load-before-you-train recipes for the diffusion chapter (Part II).

Quick mode is MNIST on a CPU: a 1.06M-parameter class-conditional UNet whose trained
weights ship with the package (``sa_utils/storage/weights``, listed in ``MANIFEST.json`` with
their sha256 and the command that made them), so the chapter forgets in minutes.
Full mode is the paper's CIFAR-10 setting on a GPU. Every expensive result is cached in
:func:`sa_utils.runtime.cache_dir` under a name derived from its settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import torch

from sa_utils.adapters.ddpm import DDPMAdapter
from sa_utils.core.amnesia import SAConfig, SAResult, selective_amnesia
from sa_utils.core.fisher import DiagonalFisher, TimestepSum, diagonal_fisher, fisher_error
from sa_utils.core.replay import frozen_copy
from sa_utils.core.sources import DataSource, ForgetSource
from sa_utils.core.surrogates import uniform_noise
from sa_utils.data import load_cifar10, load_mnist
from sa_utils.eval.metrics import generate_per_class
from sa_utils.models import CIFARClassifier
from sa_utils.models.unet import CIFAR_UNET, MNIST_UNET, UNetConfig, build_unet
from sa_utils.recipes import mnist_vae
from sa_utils.recipes.base import Recipe, pick
from sa_utils.runtime import cache_dir, default_device, settings_digest
from sa_utils.storage.checkpoint import (
    CheckpointError,
    load_model,
    load_tensors,
    save_model,
    save_tensors,
    tensors_digest,
    weights_digest,
)
from sa_utils.storage.shipped import MANIFEST, WEIGHTS_DIR  # noqa: F401  (used by scripts/train_base_ddpm.py)
from sa_utils.storage.shipped import sha256 as _sha256  # noqa: F401
from sa_utils.storage.shipped import shipped_file as shipped_weights
from sa_utils.training import classifier_accuracy, classifier_loss, fit, train_ddpm


@dataclass(frozen=True)
class DDPMRecipe(Recipe):
    """Every run-size knob of Part II; ``full`` follows the authors' CIFAR-10 settings."""

    MIN_CHECKPOINT_EVERY: ClassVar[int] = 50

    dataset: str
    unet: UNetConfig
    train_steps: int
    train_batch: int
    train_lr: float
    ema_decay: float
    pool_per_class: int
    """Samples per class drawn once from the pretrained model: the base model's evaluation,
    the Fisher's samples and the replay pool all come from this one draw."""
    fisher_samples: int
    sa_steps: int
    sa_batch: int
    sa_lr: float
    eval_per_class: int
    lmbda: float = 10.0
    gamma: float = 1.0
    grad_clip: float = 1.0
    cond_drop: float = 0.1
    guidance_scale: float = 2.0
    """The authors' ``cond_scale``: ``(1 + w) eps_c - w eps_u`` (their w = 2)."""
    sample_steps: int = 25
    sampler: str = "ddim"
    """``"ddim"`` (``sample_steps`` deterministic steps) or ``"ddpm"`` (the authors' 1,000 ancestral steps)."""
    fisher_timesteps: int | None = None
    """``None``: the authors' Fisher, the loss summed over all T timesteps per sample; ``K``: the
    stratified estimate with K timesteps (:class:`sa_utils.core.fisher.TimestepSum`)."""
    replay_null: bool = True
    """Replay the null class too (the book's choice, chapter 7 argues for it); the authors replay
    only samples of the remembered classes (``all_but_one_class_path_dataset`` in ``ddpm/runners/diffusion.py``)."""
    sa_ema: float | None = None
    """EMA of the weights during SA, evaluated at the end (the authors': 0.9999)."""
    num_train_timesteps: int = 1000
    seed: int = 0

    @property
    def fisher_estimator(self) -> TimestepSum:
        """The authors' DDPM Fisher keeps training's condition dropout (their loss's default 0.1)."""
        return TimestepSum(k=self.fisher_timesteps, cond_drop=self.cond_drop)

    def train_settings(self) -> dict:
        return {
            "dataset": self.dataset,
            "unet": self.unet.to_dict(),
            "steps": self.train_steps,
            "batch": self.train_batch,
            "lr": self.train_lr,
            "ema": self.ema_decay,
            "cond_drop": self.cond_drop,
            "T": self.num_train_timesteps,
            "seed": self.seed,
        }

    def sa_config(self, **overrides) -> SAConfig:
        """SA settings; the checkpoint cadence follows the recipe's ``sa_steps`` even when ``steps`` is overridden."""
        return self.sa_settings(self.sa_steps, self.sa_lr, overrides, grad_clip=self.grad_clip, ema_decay=self.sa_ema)


RECIPES = {
    # quick: a CPU. The Fisher is the stratified estimate (K timesteps per sample; chapter 7 measures
    # its error against the exact sum), sampling is 10 DDIM steps, SA keeps no EMA (an EMA of 0.9999
    # over 300 steps would move 3 % of the way from theta*).
    # 10 DDIM steps, not 25 (session 7, `python benchmarks/sampler_steps.py`): on the base model, 30 samples
    # per digit, two seeds, 25 / 15 / 10 steps gave accuracy 1.000 at every setting, P(y=0) 0.995 / 0.995-0.996
    # / 0.996, FD 5.14, 4.96 / 5.06, 4.84 / 5.24, 4.99 (seed-to-seed spread about 0.2), at 0.32 / 0.20 / 0.13 s
    # per guided image on 2 cores. The lambda sweep below was run at 25 steps.
    # lambda = 0.01, not the authors' 10: with the authors' Fisher (the square of a 1,000-term sum) on
    # this 1.06M-parameter UNet, lambda = 10 holds theta at theta* and nothing is forgotten (session 6,
    # 400 steps, batch 32: entropy on 0s 0.043, P(y=0) 0.994). A sweep at these settings (300 steps,
    # batch 16, pool 100, 30 evaluation samples per class; `forget_class(..., lmbda=, gamma=)`) gave
    # lambda 0.001 / 0.01 / 0.1 with EWC alone (gamma = 0): accuracy on the rest 0.64 / 0.89 / 1.00,
    # P(y=0) 0.10 / 0.10 / 0.17; with replay (full SA) lambda 0.01: accuracy 1.00, P(y=0) 0.10, FD 6.0.
    # 0.01 is the largest of these at which EWC alone still forgets (P <= 0.15). Chapter 7 prints what
    # lambda = 10 would weigh at its run's displacement.
    "quick": DDPMRecipe(
        "quick",
        "mnist",
        MNIST_UNET,
        train_steps=6_000,
        train_batch=64,
        train_lr=5e-4,
        ema_decay=0.999,
        pool_per_class=50,
        fisher_samples=200,
        sa_steps=300,
        sa_batch=16,
        sa_lr=1e-4,
        eval_per_class=30,
        fisher_timesteps=10,
        lmbda=0.01,
        sample_steps=10,
    ),
    # full: the authors' CIFAR-10 settings (ddpm/configs/cifar10_forget.yml, cifar10_fim.yml, runners/diffusion.py):
    # exact Fisher over 500 samples per class, 20k steps, batch 128, Adam 1e-4, clip 1, EMA 0.9999 evaluated,
    # w = 2 and 1,000 ancestral sampling steps.
    "full": DDPMRecipe(
        "full",
        "cifar10",
        CIFAR_UNET,
        train_steps=200_000,
        train_batch=128,
        train_lr=2e-4,
        ema_decay=0.9999,
        pool_per_class=500,
        fisher_samples=5_000,
        sa_steps=20_000,
        sa_batch=128,
        sa_lr=1e-4,
        eval_per_class=500,
        sample_steps=1000,
        sampler="ddpm",
        sa_ema=0.9999,
        replay_null=False,
    ),
}


# full mode (a CIFAR-10 DDPM trained for 200,000 steps, 20,000 SA steps: hours of GPU time) runs only
# when asked for: MODE="full" or SA_MODE=full
GPU_DEFAULT_MODE = "quick"


def recipe(mode: str | None = None, **overrides) -> DDPMRecipe:
    """The recipe for ``mode`` (quick on a GPU unless full is asked for), with overrides."""
    return pick(RECIPES, mode, GPU_DEFAULT_MODE, **overrides)


def _dir(r: DDPMRecipe) -> Path:
    path = cache_dir() / f"ddpm-{r.dataset}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=2)
def dataset(name: str, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] as ``[N, C, H, W]`` and integer labels."""
    if name == "mnist":
        return load_mnist(train)
    if name == "cifar10":
        return load_cifar10(train)
    raise ValueError(f"unknown dataset {name!r}; use 'mnist' or 'cifar10'")


def adapter_for(model: torch.nn.Module, r: DDPMRecipe) -> DDPMAdapter:
    """``model`` (a UNet) behind the DDPM adapter with the recipe's schedule, guidance and sampler."""
    return DDPMAdapter(
        model,
        r.unet,
        num_train_timesteps=r.num_train_timesteps,
        guidance_scale=r.guidance_scale,
        sample_steps=r.sample_steps,
        sampler=r.sampler,
    )


def base_name(r: DDPMRecipe) -> str:
    return f"ddpm-{r.dataset}-{r.train_steps // 1000}k-{settings_digest(r.train_settings())}.safetensors"


def pretrained_ddpm(r: DDPMRecipe, device: torch.device | None = None, progress: bool = True) -> DDPMAdapter:
    """The class-conditional DDPM trained on all classes (theta*), EMA weights.

    Looks for shipped weights first, then the cache; otherwise trains (resumably) and caches.
    """
    device = device or default_device()
    torch.manual_seed(r.seed)
    model = build_unet(r.unet).to(device)
    name = base_name(r)
    path = shipped_weights(name) or _dir(r) / name
    if not path.exists():
        x, y = dataset(r.dataset, True)
        # the training checkpoint is named without the step count and kept, so a longer
        # recipe (train_steps=...) continues from a shorter finished run
        ckpt = (
            _dir(r)
            / f"ddpm-{r.dataset}-train-{settings_digest({**r.train_settings(), 'steps': None})}.ckpt.safetensors"
        )
        adapter = adapter_for(model, r)
        losses = train_ddpm(
            adapter,
            x,
            y,
            r.train_steps,
            r.train_batch,
            r.train_lr,
            r.cond_drop,
            r.ema_decay,
            seed=r.seed,
            checkpoint=ckpt,
            progress=progress,
        )
        save_model(model, path, {"settings": r.train_settings(), "losses_per_100_steps": losses})
    load_model(model, path)
    return adapter_for(model.eval().to(device), r)


def training_curve(r: DDPMRecipe) -> list[float]:
    """Mean training loss of every 100 steps, stored with the base checkpoint."""
    path = shipped_weights(base_name(r)) or _dir(r) / base_name(r)
    return load_tensors(path)[1]["losses_per_100_steps"]


def pretrained_classifier(r: DDPMRecipe, progress: bool = True) -> torch.nn.Module:
    """The independent evaluator: Part I's MNIST CNN, or a CIFAR-10 CNN trained here (cached)."""
    if r.dataset == "mnist":
        return mnist_vae.pretrained_classifier(mnist_vae.recipe(r.mode), progress=progress)

    epochs, batch, lr = 30, 128, 1e-3
    path = _dir(r) / f"classifier-e{epochs}-s{r.seed}.safetensors"
    device = default_device()
    torch.manual_seed(r.seed)
    model = CIFARClassifier().to(device)
    if not path.exists():
        x, y = dataset(r.dataset, True)
        fit(
            model,
            classifier_loss,
            x,
            y,
            epochs,
            batch,
            lr,
            r.seed,
            checkpoint=path.with_suffix(".ckpt.safetensors"),
            desc="classifier",
            progress=progress,
            lr_decay_every=10,
        )
        xt, yt = dataset(r.dataset, False)
        save_model(model, path, {"epochs": epochs, "test_accuracy": classifier_accuracy(model, xt, yt)})
        path.with_suffix(".ckpt.safetensors").unlink(missing_ok=True)
    load_model(model, path)
    return model.eval()


def pool_settings(base: DDPMAdapter, r: DDPMRecipe) -> dict:
    """What a pool is computed from: the exact weights of theta* and every sampling setting."""
    return {
        "base": weights_digest(base.model),
        "n": r.pool_per_class,
        "w": r.guidance_scale,
        "guidance": "(1+w)c-wu",
        "sampler": r.sampler,
        "steps": r.sample_steps,
        "seed": r.seed,
    }


def pool_name(base: DDPMAdapter, r: DDPMRecipe) -> str:
    return f"pool-{settings_digest(pool_settings(base, r))}.safetensors"


def model_pool(
    base: DDPMAdapter, r: DDPMRecipe, progress: bool = True, draw: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r.pool_per_class`` guided samples of every class and of the null class, drawn once (cached).

    Diffusion sampling costs ``2 x sample_steps`` network evaluations per image, so Part II
    draws from the pretrained model once and uses the draw three times: to evaluate the base
    model, to estimate the Fisher, and as the replay pool (see :func:`forget_class`).
    The quick-mode pool of the shipped theta* ships too (``python scripts/ship_mnist.py ddpm-pool``
    draws it with this function); its name is a digest of the weights and settings, so any other
    model or setting draws its own. ``draw=True`` ignores the shipped file and the cache.
    """

    settings, name = pool_settings(base, r), pool_name(base, r)
    path = _dir(r) / name
    found = None if draw else shipped_weights(name) or (path if path.exists() else None)
    if found is not None:
        t, meta = load_tensors(found)
        if meta != settings:
            raise CheckpointError(f"{found} was drawn with {meta}, not {settings}; delete it to draw the pool again")
        return t["x"], t["c"]
    classes = list(range(r.unet.n_classes)) + [r.unet.null_class]
    x, c = generate_per_class(
        base, classes, r.pool_per_class, seed=r.seed + 1, batch_size=250, progress=progress, cache=False
    )  # this function keeps the pool itself

    save_tensors(path, {"x": x, "c": c}, settings)
    return x, c


def fisher_samples(
    r: DDPMRecipe, pool: tuple[torch.Tensor, torch.Tensor], n: int | None = None, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (default ``r.fisher_samples``) pool samples of the classes, the same number of each.

    As in the authors' code, the Fisher sees generated samples of every class, not of the null
    class; the null condition enters through condition dropout in the loss (see ``fisher_estimator``).
    """
    x, c = pool
    k = r.unet.n_classes
    n = r.fisher_samples if n is None else n
    per = -(-n // k)
    g = torch.Generator().manual_seed(r.seed if seed is None else seed)
    idx = []
    for cls in range(k):
        where = (c == cls).nonzero().flatten()
        idx.append(where[torch.randperm(len(where), generator=g)[:per]])
    order = torch.cat(idx)[torch.randperm(per * k, generator=g)][:n]
    return x[order], c[order]


def ddpm_fisher(
    base: DDPMAdapter,
    r: DDPMRecipe,
    pool: tuple[torch.Tensor, torch.Tensor],
    progress: bool = True,
    estimator: TimestepSum | None = None,
    n: int | None = None,
) -> DiagonalFisher:
    """Diagonal Fisher of the pretrained DDPM from ``n`` (default ``r.fisher_samples``) of its own samples (cached).

    Per sample, the gradient of the noise-prediction loss summed over timesteps, squared
    (``estimator``, default ``r.fisher_estimator``: all T = 1000 in full mode, the authors'
    ``save_fim`` in ``ddpm/runners/diffusion.py``; K stratified timesteps in quick mode).
    """
    est = estimator or r.fisher_estimator
    x, c = fisher_samples(r, pool, n)
    settings = {
        "base": weights_digest(base.model),
        "n": len(x),
        "seed": r.seed,
        "estimator": est.name,
        "samples": tensors_digest({"x": x, "c": c}),
        "guidance": "(1+w)c-wu",
        "w": r.guidance_scale,
        "sampler": r.sampler,
    }
    path = _dir(r) / f"fisher-{Path(base_name(r)).stem}-{settings_digest(settings)}.safetensors"
    if path.exists():
        return DiagonalFisher.load(path, base.model, estimator=est)
    batches = ({"x": x[i : i + 50], "c": c[i : i + 50]} for i in range(0, len(x), 50))
    fisher = diagonal_fisher(base, batches, seed=r.seed, total=len(x), progress=progress, estimator=est)
    fisher.metadata["base"] = base_name(r)
    fisher.save(path)
    return fisher


def estimator_study(
    base: DDPMAdapter,
    r: DDPMRecipe,
    pool: tuple[torch.Tensor, torch.Tensor],
    n: int = 2,
    ks: Sequence[int] = (1, 10, 100),
    displacement: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> list[dict]:
    """The exact timestep-sum Fisher of ``n`` pool samples against cheaper estimates on the same samples
    (chapter 7): the stratified sums with ``K`` in ``ks`` and the one-draw Fisher (the gradient of
    one random ``(t, eps)``, squared). Every estimate is cached; each row has the estimator, its
    seconds per sample, and :func:`sa_utils.core.fisher.fisher_error` against the exact one."""

    exact = ddpm_fisher(base, r, pool, progress, estimator=TimestepSum(cond_drop=r.cond_drop), n=n)
    rows = [
        {
            "estimator": exact.estimator,
            "K": r.num_train_timesteps,
            "s_per_sample": exact.metadata["seconds"] / n,
            **fisher_error(exact, exact, displacement),
        }
    ]
    for k in ks:
        f = ddpm_fisher(base, r, pool, progress, estimator=TimestepSum(k=int(k), cond_drop=r.cond_drop), n=n)
        rows.append(
            {
                "estimator": f.estimator,
                "K": int(k),
                "s_per_sample": f.metadata["seconds"] / n,
                **fisher_error(f, exact, displacement),
            }
        )
    x, c = fisher_samples(r, pool, n)
    settings = {
        "base": weights_digest(base.model),
        "n": n,
        "seed": r.seed,
        "estimator": "single-draw",
        "study": True,
        "samples": tensors_digest({"x": x, "c": c}),
    }
    path = _dir(r) / f"fisher-{Path(base_name(r)).stem}-{settings_digest(settings)}.safetensors"
    if path.exists():
        one = DiagonalFisher.load(path, base.model, estimator="single-draw")
    else:
        one = diagonal_fisher(base, [{"x": x, "c": c}], method="vmap", seed=r.seed, progress=False, vmap_chunk_size=16)
        one.save(path)
    rows.append(
        {
            "estimator": one.estimator,
            "K": 1,
            "s_per_sample": one.metadata["seconds"] / n,
            **fisher_error(one, exact, displacement),
        }
    )
    return rows


def forget_class(
    base: DDPMAdapter,
    r: DDPMRecipe,
    forget: int = 0,
    pool: tuple[torch.Tensor, torch.Tensor] | None = None,
    fisher: DiagonalFisher | None = None,
    lmbda: float | None = None,
    gamma: float | None = None,
    steps: int | None = None,
    lr: float | None = None,
    progress: bool = True,
) -> tuple[DDPMAdapter, SAResult]:
    """Selective Amnesia on a copy of the DDPM: class ``forget`` learns uniform noise.

    The same :func:`~sa_utils.core.amnesia.selective_amnesia` routine as Part I. Replay batches
    come from the pool of pretrained samples of the remembered classes *and* of the null
    class, so the unconditional model that guidance relies on is remembered too.
    ``lmbda=0`` drops EWC, ``gamma=0`` drops replay. Runs are cached and resume.
    """
    n = r.unet.n_classes
    if not isinstance(forget, int) or not 0 <= forget < n:
        raise ValueError(f"the class to forget must be an integer in 0..{n - 1}, got {forget!r}")
    overrides = {k: float(v) for k, v in {"lmbda": lmbda, "gamma": gamma, "lr": lr}.items() if v is not None}
    if steps is not None:
        overrides["steps"] = int(steps)
    cfg = r.sa_config(**overrides)
    pool = pool if pool is not None else model_pool(base, r, progress)
    if cfg.lmbda != 0 and fisher is None:
        fisher = ddpm_fisher(base, r, pool, progress=progress)
    use_f = fisher is not None and cfg.lmbda
    # keyed by the exact base weights, replay pool and Fisher values: another model never finds this run
    settings = {
        "forget": forget,
        "sa": asdict(cfg),
        "batch": r.sa_batch,
        "base": weights_digest(base.model),
        "pool": tensors_digest({"x": pool[0], "c": pool[1]}),
        "fisher_n": fisher.n_samples if use_f else 0,
        "fisher_estimator": fisher.estimator if use_f else None,
        "fisher_digest": tensors_digest(fisher.values) if use_f else None,
        "guidance": "(1+w)c-wu",
        "w": r.guidance_scale,
        "sampler": r.sampler,
        "surrogate": "noise",
    }
    if not r.replay_null:
        settings["replay_null"] = False
    run_dir = _dir(r) / "runs" / f"forget-{settings_digest(settings)}"
    student = adapter_for(frozen_copy(base).model.train().requires_grad_(True), r)
    shape = (r.unet.channels, r.unet.sample_size, r.unet.sample_size)
    forget_src = ForgetSource(uniform_noise(shape), forget, r.sa_batch, seed=r.seed, device=base.device)
    replay_src = None
    if cfg.gamma:
        x, c = pool
        keep = c != forget
        if not r.replay_null:
            keep &= c != r.unet.null_class
        replay_src = DataSource(x[keep], c[keep], r.sa_batch, seed=r.seed, device=base.device)
    label = (
        "SA"
        if (cfg.lmbda and cfg.gamma)
        else "surrogate" + (" + EWC" if cfg.lmbda else "") + (" + replay" if cfg.gamma else "")
    )
    result = selective_amnesia(
        student,
        forget_src,
        replay_src,
        fisher if cfg.lmbda else None,
        cfg,
        run_dir=run_dir,
        progress=progress,
        desc=label,
    )
    return student, result
