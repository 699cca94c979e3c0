"""The diagonal Fisher information of a generative model, from its own samples (chapter 3).

    F_i = E_{c ~ p(c), x ~ p(x | theta*, c)} [ (d/d theta_i  loss(x, c; theta*))^2 ]

where ``loss`` is the per-sample negative ELBO. The expectation is over *per-sample*
squared gradients -- squaring the gradient of a batch mean gives a different (and wrong)
quantity. Three ways to compute the same sum, all exact:

* ``"loop"``   -- one backward pass per sample: the reference, slow.
* ``"linear"`` -- when every trainable weight sits in an ``nn.Linear`` called once per
  forward pass, a batch's sum of squared per-sample gradients is one matrix product:
  ``sum_b (g_b x_b^T)**2 = (g**2)^T (x**2)`` with ``g`` the back-propagated signal at the
  layer's output and ``x`` its input. One forward and one backward pass per batch.
* ``"vmap"``   -- ``torch.func.vmap(grad(...))`` per-sample gradients for any model, in
  chunks so memory stays bounded.

``"auto"`` takes ``"linear"`` when the model allows it, else ``"vmap"``.

**Diffusion models** (chapter 7) need one more choice, the *estimator* of a sample's score.
The authors (``ddpm/runners/diffusion.py`` ``save_fim``; ``sd/ldm/models/diffusion/ddpm_fim.py``)
add each sample's loss over **all** ``T`` timesteps, with fresh noise at every ``t``, take the
gradient of that sum and square it: the sum comes before the square. :class:`TimestepSum`
computes exactly that, batched: the ``T`` noised copies of one image go through the network in
chunks, one backward pass per chunk, accumulating the sample's gradient
(:func:`sq_grad_sum_timesteps`; :func:`sq_grad_sum_timestep_loop` is the authors' one-timestep-
at-a-time algorithm, kept as the reference). ``TimestepSum(k=K)`` is the cheaper stratified
estimate: one timestep from each of ``K`` equal strata, each term weighted by its stratum's size.
The estimator's name is stored in the Fisher file (``metadata["estimator"]``) and
:meth:`DiagonalFisher.load` refuses a file made by another one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sa_utils.adapters.base import Batch, GenerativeAdapter
from sa_utils.progress import progress_bar
from sa_utils.runtime import step_generator
from sa_utils.storage.checkpoint import CheckpointError, check_state_matches, load_tensors, save_tensors

METHODS = ("auto", "linear", "vmap", "loop")
SINGLE = "single-draw"
"""Estimator name: the gradient of one draw of the loss's randomness per sample (the VAE's, as the authors)."""


@dataclass(frozen=True)
class TimestepSum:
    """The diffusion Fisher's per-sample gradient: of the loss summed over timesteps.

    ``k=None``: all ``T`` timesteps, fresh noise at each (the authors' estimator, exact).
    ``k=K``: stratified, one timestep drawn uniformly in each of ``K`` consecutive strata of
    ``[0, T)``, its loss weighted by the stratum's size (so the sum estimates the full sum).
    ``chunk``: noised copies per forward/backward pass (memory; the result does not depend on it).
    ``cond_drop``: probability that a term uses the null condition, as the authors' DDPM Fisher
    does (their loss keeps the training-time condition dropout of 0.1).
    """

    k: int | None = None
    chunk: int = 125
    cond_drop: float = 0.0

    def __post_init__(self):
        if self.k is not None and (not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"TimestepSum(k=...) must be a positive integer or None (all timesteps), got {self.k!r}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must lie in [0, 1), got {self.cond_drop}")

    @property
    def name(self) -> str:
        base = "timestep-sum" if self.k is None else f"stratified-{self.k}"
        return base + (f"+cond-drop-{self.cond_drop:g}" if self.cond_drop else "")

    def draw(self, T: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps ``[K]`` and their weights ``[K]`` for one sample."""
        if self.k is None or self.k >= T:
            return torch.arange(T), torch.ones(T)
        edges = torch.linspace(0, T, self.k + 1).round().long()
        size = edges[1:] - edges[:-1]
        u = torch.rand(self.k, generator=generator, device=generator.device).cpu()
        t = edges[:-1] + (u * size).long().clamp(max=size - 1)
        return t, size.float()


@dataclass
class DiagonalFisher:
    """Diagonal Fisher values by parameter name, with provenance metadata."""

    values: dict[str, torch.Tensor]
    n_samples: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        meta = {
            "kind": "diagonal_fisher",
            "n_samples": self.n_samples,
            "signature": _signature(self.values),
            **self.metadata,
        }
        return save_tensors(path, self.values, meta)

    @property
    def estimator(self) -> str:
        """Which estimator made it (files from before the field existed used one draw per sample)."""
        return self.metadata.get("estimator", SINGLE)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: nn.Module | dict[str, nn.Parameter] | None = None,
        estimator: str | TimestepSum | None = None,
    ) -> DiagonalFisher:
        """Load a Fisher file; with ``model``, check it covers exactly the trainable parameters;
        with ``estimator``, check it was made by that estimator (a name or a :class:`TimestepSum`)."""
        values, meta = load_tensors(path)
        if meta.get("kind") != "diagonal_fisher":
            raise CheckpointError(f"{path} is not a Fisher file (metadata kind={meta.get('kind')!r}).")
        fisher = cls(
            values, int(meta.pop("n_samples")), {k: v for k, v in meta.items() if k not in ("kind", "signature")}
        )
        if model is not None:
            fisher.check_matches(model, path)
        if estimator is not None:
            want = estimator.name if isinstance(estimator, TimestepSum) else str(estimator)
            if fisher.estimator != want:
                raise CheckpointError(
                    f"{path} was made by the Fisher estimator {fisher.estimator!r}, but {want!r} was "
                    "asked for: the two differ by orders of magnitude, so lambda would not mean the "
                    "same. Recompute the Fisher with the estimator you want, or ask for this one."
                )
        return fisher

    def check_matches(self, model: nn.Module | dict[str, nn.Parameter], where: str | Path = "Fisher") -> None:
        params = _trainable(model)
        check_state_matches(
            {k: p.shape for k, p in params.items()}, {k: v.shape for k, v in self.values.items()}, "Fisher", where
        )

    def flat(self) -> torch.Tensor:
        return torch.cat([v.flatten() for v in self.values.values()])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> DiagonalFisher:
        """On ``device`` (and in ``dtype``, to halve F's memory during SA).

        Half precision means **bfloat16** for F: ``dtype=torch.float16`` is stored as bfloat16,
        because float16's range would flush most entries of a diffusion Fisher to zero (see
        :class:`sa_utils.core.ewc.EWCPenalty`)."""
        if dtype == torch.float16:
            dtype = torch.bfloat16
        return DiagonalFisher(
            {k: v.to(device, dtype or v.dtype) for k, v in self.values.items()}, self.n_samples, dict(self.metadata)
        )


def _trainable(model: nn.Module | dict[str, nn.Parameter]) -> dict[str, nn.Parameter]:
    if isinstance(model, nn.Module):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}
    return dict(model)


def _signature(values: dict[str, torch.Tensor]) -> str:
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(values.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the accumulator
class FisherSum:
    """The one accumulator of every diagonal Fisher in the book: running sums of per-sample
    squared gradients by parameter name, and how many samples they hold.

    :func:`diagonal_fisher` adds into one; so does each process of the sharded Stable Diffusion
    Fisher (:func:`sa_utils.sd.fisher.sd_fisher`), which saves its :attr:`sums` as a partial file
    and adds the processes' partial sums up at the end (:meth:`merge`). :meth:`fisher` divides by
    the count and refuses non-finite values.
    """

    def __init__(self, params: dict[str, torch.Tensor], count: int = 0):
        self.sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        self.count = count

    @classmethod
    def of(cls, sums: dict[str, torch.Tensor], count: int) -> FisherSum:
        """An accumulator holding ``sums`` (e.g. read back from a partial file) of ``count`` samples."""
        acc = cls({}, count)
        acc.sums = dict(sums)
        return acc

    def add(self, sums: dict[str, torch.Tensor], n: int) -> None:
        """Add one batch's ``sum_b grad_b**2`` (by name) over its ``n`` samples."""
        for name, s in sums.items():
            self.sums[name].add_(s.float())
        self.count += n

    def merge(self, other: FisherSum) -> FisherSum:
        """Add another accumulator's sums and count into this one (e.g. one process's partial sums)."""
        if self.sums and set(self.sums) != set(other.sums):
            differ = sorted(set(self.sums) ^ set(other.sums))[:4]
            raise ValueError(f"the two partial Fisher sums cover different parameters: {differ}")
        self.sums = {n: self.sums[n] + s for n, s in other.sums.items()} if self.sums else dict(other.sums)
        self.count += other.count
        return self

    def fisher(self, metadata: dict[str, Any], overflow: str = "the model's loss overflowed on its own samples"):
        """The :class:`DiagonalFisher` of the samples added: the sums over the count."""
        if self.count == 0:
            raise ValueError("no samples were given to the Fisher")
        values = {n: (s / self.count).cpu() for n, s in self.sums.items()}
        for n, v in values.items():
            if not torch.isfinite(v).all():
                raise FloatingPointError(f"non-finite Fisher values in {n}: {overflow}")
        return DiagonalFisher(values, self.count, metadata)


# --------------------------------------------------------------------------- per-batch sums
def sq_grad_sum_loop(adapter: GenerativeAdapter, batch: Batch) -> dict[str, torch.Tensor]:
    """Reference: one backward pass per sample; returns ``sum_b grad_b**2`` by name."""
    params = adapter.trainable_parameters()
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    names, plist = list(params), list(params.values())
    for b in range(len(batch["x"])):
        one = {k: v[b : b + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(adapter.loss(one).sum(), plist, allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                out[n].add_(g.pow(2))
    return out


def linear_eligible(adapter: GenerativeAdapter) -> bool:
    """True when every trainable parameter belongs to an ``nn.Linear`` (weight or bias)."""
    owned = set()
    for mod in adapter.model.modules():
        if isinstance(mod, nn.Linear):
            owned.update(id(p) for p in mod.parameters(recurse=False))
    return all(id(p) in owned for p in adapter.trainable_parameters().values())


def sq_grad_sum_linear(adapter: GenerativeAdapter, batch: Batch) -> dict[str, torch.Tensor]:
    """Exact ``sum_b grad_b**2`` for models whose trainable weights are all ``nn.Linear``.

    A forward hook keeps each layer's input ``a`` ([B, in]) and output; one backward pass
    gives the signal ``g`` ([B, out]) at every output for ``sum_b loss_b`` (the weight
    gradients themselves are never formed). Because
    sample b's loss depends only on row b, row b of ``g`` is sample b's own signal, and
    ``sum_b (g_b a_b^T)**2 = (g**2)^T @ (a**2)``, ``sum_b g_b**2`` for the bias.
    """
    if not linear_eligible(adapter):
        raise ValueError("method='linear' needs every trainable parameter in an nn.Linear; use method='vmap'")
    params = adapter.trainable_parameters()
    name_of = {id(p): n for n, p in params.items()}
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    records: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []

    def fwd_hook(mod, args, output):
        a = args[0].detach()
        if a.dim() != 2:
            raise ValueError(
                f"method='linear' needs 2-D layer inputs [batch, features]; got {tuple(a.shape)}; use method='vmap'"
            )
        records.append((mod, a, output))

    handles = [
        mod.register_forward_hook(fwd_hook)
        for mod in adapter.model.modules()
        if isinstance(mod, nn.Linear) and any(p.requires_grad for p in mod.parameters(recurse=False))
    ]
    try:
        loss = adapter.loss(batch).sum()
    finally:
        for h in handles:
            h.remove()
    mods = [m for m, _, _ in records]
    if len(set(mods)) != len(mods):
        raise ValueError(
            "method='linear' needs each nn.Linear called once per forward; some were reused; use method='vmap'"
        )
    # gradients w.r.t. the layer outputs only: the weight gradients themselves are never formed
    signals = torch.autograd.grad(loss, [o for _, _, o in records], allow_unused=True)
    for (mod, a, _), g in zip(records, signals):
        if g is None:
            continue
        g2 = g.detach().pow(2)
        if mod.weight.requires_grad:
            out[name_of[id(mod.weight)]].add_(g2.T @ a.pow(2))
        if mod.bias is not None and mod.bias.requires_grad:
            out[name_of[id(mod.bias)]].add_(g2.sum(0))
    return out


class _LossModule(nn.Module):
    """Wraps an adapter so ``torch.func.functional_call`` can swap its model's parameters."""

    def __init__(self, adapter: GenerativeAdapter):
        super().__init__()
        self.model = adapter.model
        self._adapter = adapter

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._adapter.loss(batch)


def sq_grad_sum_vmap(adapter: GenerativeAdapter, batch: Batch, chunk_size: int = 32) -> dict[str, torch.Tensor]:
    """Exact ``sum_b grad_b**2`` via ``torch.func.vmap(grad(...))`` over chunks of the batch."""
    from torch.func import functional_call, grad, vmap

    wrapper = _LossModule(adapter)
    params = {f"model.{n}": p.detach() for n, p in adapter.trainable_parameters().items()}
    frozen = {f"model.{n}": t for n, t in adapter.model.named_parameters() if not t.requires_grad}
    frozen.update({f"model.{n}": t for n, t in adapter.model.named_buffers()})

    def one_loss(p, sample):
        single = {k: v.unsqueeze(0) for k, v in sample.items()}
        return functional_call(wrapper, {**p, **frozen}, (single,)).sum()

    per_sample_grad = vmap(grad(one_loss), in_dims=(None, 0))
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    n = len(batch["x"])
    with adapter.per_sample_grad_mode():
        for start in range(0, n, chunk_size):
            chunk = {k: v[start : start + chunk_size] for k, v in batch.items()}
            grads = per_sample_grad(params, chunk)
            for k, g in grads.items():
                out[k].add_(g.pow(2).sum(0))
    return {k[len("model.") :]: v for k, v in out.items()}


# --------------------------------------------------------------------------- timestep sums (diffusion)
def _timestep_draws(adapter, sample: Batch, est: TimestepSum, generator: torch.Generator):
    """Timesteps, weights, noises and condition-drop flags of one sample, all from ``generator``."""
    t, w = est.draw(adapter.num_train_timesteps, generator)
    dev = generator.device
    eps = torch.randn((len(t), *sample["x"].shape[1:]), generator=generator, device=dev, dtype=torch.float32)
    drop = (torch.rand(len(t), generator=generator, device=dev) < est.cond_drop).cpu() if est.cond_drop else None
    return t, w, eps, drop


def _timestep_sq_grads(
    adapter, batch: Batch, est: TimestepSum, generators: list[torch.Generator], per_pass: int
) -> dict[str, torch.Tensor]:
    """``sum_b (grad sum_t w_t loss(x_b, c_b, t, eps_bt))**2``, ``per_pass`` noised copies per backward."""
    params = adapter.trainable_parameters()
    names, plist = list(params), list(params.values())
    out = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    for b in range(len(batch["x"])):
        one = {k: v[b : b + 1] for k, v in batch.items()}
        t, w, eps, drop = _timestep_draws(adapter, one, est, generators[b])
        acc = [torch.zeros_like(p, dtype=torch.float32) for p in plist]
        for lo in range(0, len(t), per_pass):
            hi = lo + per_pass
            sub = adapter.timestep_batch(one, t[lo:hi], eps[lo:hi], None if drop is None else drop[lo:hi])
            loss = (adapter.loss(sub).float() * w[lo:hi].to(sub["x"].device)).sum()
            for a, g in zip(acc, torch.autograd.grad(loss, plist, allow_unused=True)):
                if g is not None:
                    a.add_(g.float())
        for n, a in zip(names, acc):
            out[n].add_(a.pow(2))
    return out


def sq_grad_sum_timesteps(
    adapter, batch: Batch, est: TimestepSum, generators: list[torch.Generator]
) -> dict[str, torch.Tensor]:
    """``sum_b (grad sum_t w_t loss(x_b, c_b, t, eps_bt))**2`` by name: the timestep sum before the square.

    For each sample, its noised copies go through the network ``est.chunk`` at a time; each
    chunk's summed loss gets one backward pass, and the gradients add up to the gradient of the
    whole sum. ``generators[b]`` draws sample ``b``'s timesteps and noise.
    """
    return _timestep_sq_grads(adapter, batch, est, generators, est.chunk)


def sq_grad_sum_timestep_loop(
    adapter, batch: Batch, est: TimestepSum, generators: list[torch.Generator]
) -> dict[str, torch.Tensor]:
    """Reference for :func:`sq_grad_sum_timesteps`: the authors' algorithm, one timestep per
    forward and backward pass, the gradients added over ``t`` before squaring. Same draws."""
    return _timestep_sq_grads(adapter, batch, est, generators, 1)


# --------------------------------------------------------------------------- driver
def diagonal_fisher(
    adapter: GenerativeAdapter,
    batches: Iterable[Batch],
    method: str = "auto",
    seed: int = 0,
    vmap_chunk_size: int = 32,
    total: int | None = None,
    progress: bool = True,
    estimator: TimestepSum | None = None,
) -> DiagonalFisher:
    """Average per-sample squared gradients of ``adapter.loss`` over ``batches``.

    ``batches`` yields samples of the pretrained model (see :func:`sa_utils.core.replay.model_samples`).
    The loss's randomness (e.g. the VAE's reparameterisation noise) is drawn here from a
    generator seeded with ``seed``, so every ``method`` sees identical draws and returns
    the same numbers up to float rounding.

    ``estimator``: ``None`` squares the gradient of one draw per sample (the VAE); a
    :class:`TimestepSum` (diffusion adapters) squares the gradient of the loss summed over
    timesteps. Sample ``i`` (counted over all batches) then draws its timesteps and noise from
    ``step_generator(seed, i)``, so the result does not depend on how samples are batched;
    ``method`` is ``"batched"`` (:func:`sq_grad_sum_timesteps`) or ``"loop"`` (the authors'
    one-timestep-per-pass reference).
    """
    if estimator is not None:
        if method not in ("auto", "batched", "loop"):
            raise ValueError(
                f"with a TimestepSum estimator, method must be 'batched' (or 'auto') or 'loop', got {method!r}"
            )
        if not hasattr(adapter, "timestep_batch"):
            raise ValueError(
                f"{type(adapter).__name__} is not a diffusion adapter; a TimestepSum estimator needs timesteps"
            )
        method = "loop" if method == "loop" else "batched"
    elif method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "linear" if linear_eligible(adapter) else "vmap"
    fn = {
        "loop": sq_grad_sum_loop,
        "linear": sq_grad_sum_linear,
        "vmap": lambda a, b: sq_grad_sum_vmap(a, b, vmap_chunk_size),
        "batched": None,
    }[method]
    if estimator is not None:
        timestep_fn = sq_grad_sum_timestep_loop if method == "loop" else sq_grad_sum_timesteps
    params = adapter.trainable_parameters()
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    acc = FisherSum(params)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    was_training = adapter.model.training
    adapter.model.eval()
    bar = progress_bar(total=total, desc=f"Fisher ({method})", unit="sample", disable=not progress)
    try:
        for batch in batches:
            batch = {k: v.to(adapter.device) for k, v in batch.items()}
            if acc.count == 0:  # the first batch, before any gradient: wrong data fails here
                adapter.check_batch(batch, "the Fisher's first batch")
            if estimator is None:
                sums = fn(adapter, adapter.draw_noise(batch, generator))
            else:
                adapter.check_condition(batch["c"])
                gens = [step_generator(seed, acc.count + b) for b in range(len(batch["x"]))]
                sums = timestep_fn(adapter, batch, estimator, gens)
            acc.add(sums, len(batch["x"]))
            bar.update(len(batch["x"]))
    finally:
        bar.close()
        adapter.model.train(was_training)
    if acc.count == 0:
        raise ValueError("no samples were given to diagonal_fisher")
    meta = {
        "method": method,
        "model_config": adapter.config(),
        "seed": seed,
        "estimator": estimator.name if estimator is not None else SINGLE,
        "seconds": time.perf_counter() - started,
    }
    if estimator is not None:
        meta["num_train_timesteps"] = adapter.num_train_timesteps
    return acc.fisher(meta)


# --------------------------------------------------------------------------- comparing estimates
def fisher_error(
    approx: DiagonalFisher, exact: DiagonalFisher, displacement: dict[str, torch.Tensor] | None = None
) -> dict[str, float]:
    """How far ``approx`` is from ``exact`` (chapter 7 compares estimators with it).

    ``l1``: ``sum |F_a - F_e| / sum F_e`` over all entries; ``median``: the median of
    ``|F_a - F_e| / F_e`` over the entries where ``F_e > 0``; ``total``: ``sum F_a / sum F_e``;
    with ``displacement`` (``theta - theta*`` by name), ``penalty``: the EWC penalty
    ``sum F d^2`` under ``approx`` over that under ``exact``.
    """
    if set(approx.values) != set(exact.values):
        raise ValueError(
            f"the two Fishers cover different parameters: {sorted(set(approx.values) ^ set(exact.values))[:4]}"
        )
    a, e = approx.flat().double(), exact.flat().double()
    pos = e > 0
    out = {
        "l1": float((a - e).abs().sum() / e.sum()),
        "median": float(((a - e).abs()[pos] / e[pos]).median()),
        "total": float(a.sum() / e.sum()),
    }
    if displacement is not None:
        d2 = torch.cat([displacement[n].detach().double().flatten().cpu().pow(2) for n in exact.values])
        out["penalty"] = float((a * d2).sum() / (e * d2).sum())
    return out
