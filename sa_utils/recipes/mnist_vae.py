"""Load-before-you-train recipes for the MNIST chapters (Part I).

Every function here first looks in :func:`sa_utils.runtime.cache_dir` for a result made
with the same settings, and only trains or computes when there is none. Chapters share the
cache, so chapter 5 reuses the CVAE chapter 2 trained and the Fisher chapter 3 computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

from sa_utils.adapters import VAEAdapter
from sa_utils.core.amnesia import SAConfig, SAResult, selective_amnesia
from sa_utils.core.fisher import DiagonalFisher, diagonal_fisher
from sa_utils.core.replay import frozen_copy, model_samples
from sa_utils.core.sources import DataSource, ForgetSource, ReplaySource
from sa_utils.core.surrogates import SurrogateFn, constant_image, other_class, uniform_noise
from sa_utils.data import load_mnist
from sa_utils.models import CVAE, CVAEConfig, MNISTClassifier
from sa_utils.recipes.base import Recipe, pick
from sa_utils.runtime import cache_dir, default_device, settings_digest
from sa_utils.storage.checkpoint import load_model, load_tensors, save_model, tensors_digest, weights_digest
from sa_utils.storage.shipped import shipped_file
from sa_utils.training import classifier_accuracy, classifier_loss, cvae_loss, fit


@dataclass(frozen=True)
class MNISTRecipe(Recipe):
    """Every run-size knob of Part I; ``full`` are the authors' settings."""

    cvae_epochs: int
    classifier_epochs: int
    fisher_samples: int
    sa_steps: int
    sa_batch: int
    eval_per_class: int
    cvae_batch: int = 128
    cvae_lr: float = 1e-3
    classifier_batch: int = 64
    classifier_lr: float = 1e-4
    classifier_lr_decay_every: int = 5
    fisher_batch: int = 500
    sa_lr: float = 1e-4
    short_steps: int = 1_500
    short_lr: float = 1e-3
    lmbda: float = 100.0
    gamma: float = 1.0
    seed: int = 0

    def sa_config(self, schedule: str = "main", **overrides) -> SAConfig:
        """SA settings: ``"main"`` is the recipe's headline schedule (the authors' 10,000 steps at
        1e-4 in full mode), ``"short"`` the 1,500 steps at 1e-3 used for ablations and sweeps."""
        if schedule not in ("main", "short"):
            raise ValueError(f"schedule must be 'main' or 'short', got {schedule!r}")
        steps, lr = (self.sa_steps, self.sa_lr) if schedule == "main" else (self.short_steps, self.short_lr)
        return self.sa_settings(steps, lr, overrides)


RECIPES = {
    # quick: a 10x larger learning rate makes 1,500 steps forget about as far as the authors'
    # 10,000 steps at 1e-4 (~25 s per SA run on 2 CPU cores); ablations and sweeps use the same
    # 1,500 steps. Halving them was measured in session 9 (`python benchmarks/sa_schedule.py`,
    # Performance appendix section 10): at 750 steps faint 0s stay in the replay arms' grids and
    # P(y=0) doubles, although the surrogate loss has plateaued by step 500.
    "quick": MNISTRecipe(
        "quick",
        cvae_epochs=10,
        classifier_epochs=2,
        fisher_samples=5_000,
        sa_steps=1_500,
        sa_batch=128,
        eval_per_class=500,
        sa_lr=1e-3,
    ),
    "full": MNISTRecipe(
        "full",
        cvae_epochs=40,
        classifier_epochs=10,
        fisher_samples=50_000,
        sa_steps=10_000,
        sa_batch=256,
        eval_per_class=1_000,
    ),
}


def recipe(mode: str | None = None, **overrides) -> MNISTRecipe:
    """The recipe for ``mode`` (see :func:`sa_utils.runtime.resolve_mode`), with overrides."""
    return pick(RECIPES, mode, **overrides)


def _mnist_dir() -> Path:
    path = cache_dir() / "mnist"
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=2)
def mnist(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist(train)


def classifier_settings(r: MNISTRecipe) -> dict:
    return {
        "epochs": r.classifier_epochs,
        "batch": r.classifier_batch,
        "lr": r.classifier_lr,
        "decay_every": r.classifier_lr_decay_every,
        "seed": r.seed,
    }


def classifier_name(r: MNISTRecipe) -> str:
    return f"classifier-e{r.classifier_epochs}-{settings_digest(classifier_settings(r))}.safetensors"


def pretrained_classifier(r: MNISTRecipe, device: torch.device | None = None, progress: bool = True) -> MNISTClassifier:
    """The evaluation CNN trained on real MNIST: shipped weights (quick mode), else the cache, else trained.

    The quick-mode classifier ships in ``sa_utils/storage/weights`` (``python scripts/ship_mnist.py classifier``):
    it is an evaluator, not a lesson, and shipping it lets Part II run without Part I's cache.
    """
    device = device or default_device()
    path = shipped_file(classifier_name(r)) or _mnist_dir() / classifier_name(r)
    model = MNISTClassifier().to(device)
    if path.exists():
        load_model(model, path)
    else:
        torch.manual_seed(r.seed)
        model = MNISTClassifier().to(device)
        x, y = mnist(True)
        fit(
            model,
            classifier_loss,
            x,
            y,
            r.classifier_epochs,
            r.classifier_batch,
            r.classifier_lr,
            r.seed,
            checkpoint=path.with_suffix(".ckpt.safetensors"),
            desc="classifier",
            progress=progress,
            lr_decay_every=r.classifier_lr_decay_every,
        )
        xt, yt = mnist(False)
        save_model(model, path, {"epochs": r.classifier_epochs, "test_accuracy": classifier_accuracy(model, xt, yt)})
        path.with_suffix(".ckpt.safetensors").unlink(missing_ok=True)
    return model.eval()


def cvae_settings(r: MNISTRecipe) -> dict:
    return {
        "epochs": r.cvae_epochs,
        "batch": r.cvae_batch,
        "lr": r.cvae_lr,
        "seed": r.seed,
        "config": CVAEConfig().to_dict(),
    }


def cvae_name(r: MNISTRecipe) -> str:
    return f"cvae-e{r.cvae_epochs}-{settings_digest(cvae_settings(r))}.safetensors"


def cvae_path(r: MNISTRecipe) -> Path:
    """Where theta* is read from: the shipped file (quick mode), else the cache (trained there if absent)."""
    return shipped_file(cvae_name(r)) or _mnist_dir() / cvae_name(r)


def pretrained_cvae(
    r: MNISTRecipe, device: torch.device | None = None, progress: bool = True, train: bool = False
) -> VAEAdapter:
    """The paper's CVAE trained on all ten digits (theta*), wrapped in its SA adapter.

    The quick-mode theta* ships in ``sa_utils/storage/weights`` (``python scripts/ship_mnist.py cvae``, which
    trains it with this function): ten epochs cost about three minutes on two CPU cores, and
    every later chapter starts from it. ``train=True`` ignores the shipped file and the cache
    and trains (into the cache, replacing what is there): the same code that made the shipped file.
    """
    device = device or default_device()
    path = cvae_path(r) if not train else _mnist_dir() / cvae_name(r)
    torch.manual_seed(r.seed)
    model = CVAE().to(device)
    if path.exists() and not train:
        load_model(model, path)
    else:
        x, y = mnist(True)
        losses = fit(
            model,
            cvae_loss,
            x,
            y,
            r.cvae_epochs,
            r.cvae_batch,
            r.cvae_lr,
            r.seed,
            checkpoint=path.with_suffix(".ckpt.safetensors"),
            desc="CVAE",
            progress=progress,
        )
        save_model(
            model,
            path,
            {
                "config": model.config.to_dict(),
                "epochs": r.cvae_epochs,
                "train_loss": losses,
                "settings": cvae_settings(r),
            },
        )
        path.with_suffix(".ckpt.safetensors").unlink(missing_ok=True)
    return VAEAdapter(model.eval())


def cvae_training_curve(r: MNISTRecipe) -> list[float]:
    """Per-epoch training loss stored with theta* (shipped or cached)."""
    return load_tensors(cvae_path(r))[1]["train_loss"]


def mnist_fisher(
    adapter: VAEAdapter, r: MNISTRecipe, n_samples: int | None = None, method: str = "auto", progress: bool = True
) -> DiagonalFisher:
    """Diagonal Fisher of the pretrained CVAE from its own samples (cached)."""
    n = n_samples or r.fisher_samples
    # named by the weights it is computed from: a CVAE other than the recipe's gets its own file
    path = _mnist_dir() / f"fisher-cvae-{weights_digest(adapter.model)}-n{n}-s{r.seed}.safetensors"
    if path.exists():
        return DiagonalFisher.load(path, adapter.model)
    batches = model_samples(adapter, range(10), n, r.fisher_batch, seed=r.seed)
    fisher = diagonal_fisher(adapter, batches, method=method, seed=r.seed, total=n, progress=progress)
    fisher.metadata["cvae"] = weights_digest(adapter.model)
    fisher.save(path)
    return fisher


def surrogate(spec: str, frozen: VAEAdapter) -> SurrogateFn:
    """``"noise"`` (uniform pixels), ``"blank"`` (all black), or ``"digit:K"`` (samples of digit K)."""
    if spec == "noise":
        return uniform_noise()
    if spec == "blank":
        return constant_image(0.0)
    if spec.startswith("digit:"):
        return other_class(frozen, int(spec.split(":", 1)[1]))
    raise ValueError(f"unknown surrogate {spec!r}; use 'noise', 'blank' or 'digit:K' with K in 0..9")


def forget_digits(
    base: VAEAdapter,
    r: MNISTRecipe,
    forget: Sequence[int] | int = 0,
    surrogate_spec: str = "noise",
    fisher: DiagonalFisher | None = None,
    lmbda: float | None = None,
    gamma: float | None = None,
    steps: int | None = None,
    progress: bool = True,
    schedule: str = "main",
) -> tuple[VAEAdapter, SAResult]:
    """Run (or load) Selective Amnesia on a copy of ``base``; ``base`` itself is not changed.

    ``lmbda=0`` drops EWC, ``gamma=0`` drops replay; ``schedule="short"`` uses the recipe's
    short schedule (ablations and sweeps: full mode stays within minutes on a CPU). Runs
    live in ``cache_dir()/mnist/runs/forget-<hash of settings>`` and resume from there, so
    identical settings share one run.
    """
    forget = [forget] if isinstance(forget, int) else sorted(set(forget))
    if any(not 0 <= d <= 9 for d in forget):
        raise ValueError(f"digits to forget must lie in 0..9, got {forget}")
    remember = [d for d in range(10) if d not in forget]
    if not remember:
        raise ValueError("forgetting every digit leaves nothing to remember; keep at least one")
    overrides = {"lmbda": lmbda, "gamma": gamma, "steps": steps}
    # floats for lambda and gamma so that 10 and 10.0 name the same cached run
    cfg = r.sa_config(
        schedule, **{k: (float(v) if k != "steps" else int(v)) for k, v in overrides.items() if v is not None}
    )
    if cfg.lmbda != 0 and fisher is None:
        fisher = mnist_fisher(base, r, progress=progress)
    frozen = frozen_copy(base)
    # keyed by the exact base weights and Fisher values, so another model or Fisher never finds this run
    settings = {
        "forget": forget,
        "surrogate": surrogate_spec,
        "sa": asdict(cfg),
        "batch": r.sa_batch,
        "cvae": weights_digest(base.model),
        "fisher": tensors_digest(fisher.values) if (fisher is not None and cfg.lmbda) else None,
    }
    run_dir = _mnist_dir() / "runs" / f"forget-{settings_digest(settings)}"
    student = VAEAdapter(frozen_copy(base).model.train().requires_grad_(True))
    forget_src = ForgetSource(surrogate(surrogate_spec, frozen), forget, r.sa_batch, seed=r.seed, device=base.device)
    replay_src = ReplaySource(frozen, remember, r.sa_batch, seed=r.seed) if cfg.gamma else None
    result = selective_amnesia(
        student, forget_src, replay_src, fisher if cfg.lmbda else None, cfg, run_dir=run_dir, progress=progress
    )
    return student, result


def learn_digits(
    base: VAEAdapter,
    r: MNISTRecipe,
    digits: Sequence[int],
    lmbda: float = 0.0,
    gamma: float = 0.0,
    steps: int = 1_000,
    lr: float = 1e-3,
    batch_size: int | None = None,
    progress: bool = True,
) -> tuple[VAEAdapter, SAResult]:
    """Continue training a copy of ``base`` on *real* images of ``digits`` only (chapters 3-4).

    The same routine as Selective Amnesia with real data in place of the surrogate:
    ``lmbda > 0`` adds EWC with the pretrained model's Fisher, ``gamma > 0`` replays the
    other digits from a frozen copy. With both 0 it is plain fine-tuning, the setting in
    which catastrophic forgetting shows.
    """
    digits = sorted(set(int(d) for d in digits))
    if not digits or any(not 0 <= d <= 9 for d in digits):
        raise ValueError(f"digits must be a non-empty subset of 0..9, got {digits}")
    others = [d for d in range(10) if d not in digits]
    batch_size = batch_size or r.sa_batch
    cfg = SAConfig(
        lmbda=float(lmbda),
        gamma=float(gamma),
        steps=int(steps),
        lr=float(lr),
        seed=r.seed,
        checkpoint_every=max(steps // 5, 100),
    )
    fisher = mnist_fisher(base, r, progress=progress) if lmbda else None
    frozen = frozen_copy(base)
    settings = {
        "digits": digits,
        "sa": asdict(cfg),
        "batch": batch_size,
        "cvae": weights_digest(base.model),
        "fisher": tensors_digest(fisher.values) if fisher is not None else None,
    }
    run_dir = _mnist_dir() / "runs" / f"learn-{settings_digest(settings)}"
    x, y = mnist(True)
    keep = torch.isin(y, torch.tensor(digits))
    data = DataSource(x[keep], y[keep], batch_size, seed=r.seed, device=base.device)
    replay = ReplaySource(frozen, others, batch_size, seed=r.seed) if gamma and others else None
    student = VAEAdapter(frozen_copy(base).model.train().requires_grad_(True))
    result = selective_amnesia(
        student,
        data,
        replay,
        fisher,
        cfg,
        run_dir=run_dir,
        progress=progress,
        desc="fine-tuning" + (" + EWC" if lmbda else "") + (" + replay" if replay else ""),
    )
    return student, result
