"""How forgetting and remembering are measured, with the independent classifier (chapters 2 and 5).

* Forgetting: on samples generated for c_f, the classifier's mean prediction entropy
  (max ``ln 10 = 2.303`` for ten classes) and its mean probability of c_f.
* Remembering: the classifier's accuracy on samples of every remembered class, and the
  Frechet distance between generated and real images in the classifier's feature space
  (an offline stand-in for FID, which uses Inception features).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import torch
from torch import nn

from sa_utils.adapters.base import GenerativeAdapter
from sa_utils.progress import progress_bar
from sa_utils.runtime import cache_dir, settings_digest
from sa_utils.storage.checkpoint import load_tensors, save_tensors, weights_digest


@torch.no_grad()
def classify(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities ``[N, K]`` and penultimate features ``[N, D]`` for images ``x`` (floats in [0, 1])."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() != 4:
        raise ValueError(
            f"classify: images must be a float tensor [N, C, H, W] in [0, 1]; got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else f'{x.dtype} of shape {tuple(x.shape)}'}"
            " (uint8 pixels: divide by 255)"
        )
    if len(x) and (not bool(torch.isfinite(x).all()) or float(x.min()) < -1e-4 or float(x.max()) > 1 + 1e-4):
        raise ValueError(
            f"classify: images must be finite and in [0, 1]; got values in [{float(x.min()):.3g}, "
            f"{float(x.max()):.3g}] (images in [-1, 1]? map them with (x + 1) / 2)"
        )
    classifier.eval()
    device = next(classifier.parameters()).device
    probs, feats = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        f = classifier.features(xb)
        probs.append(torch.softmax(classifier.fc2(f), dim=1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial rate ``successes / n`` (95 % for ``z = 1.96``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n, which is
    where detector rates after forgetting sit: 0 of 28 images is compatible with a rate up to 0.12."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n = {n!r}: a rate's interval needs the number of images it was counted on (an int >= 1)")
    if not 0 <= successes <= n:
        raise ValueError(f"successes = {successes!r} is outside 0..n = {n}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_interval(rate: float, n: int) -> str:
    """``"0.25 [0.16, 0.37]"``: a rate counted on ``n`` images with its 95 % Wilson interval."""
    lo, hi = wilson_interval(round(rate * n), n)
    return f"{rate:.2f} [{lo:.2f}, {hi:.2f}]"


def rates_differ(a: float, b: float, n_a: int, n_b: int | None = None) -> int:
    """+1 if rate ``a`` is above ``b`` with disjoint 95 % Wilson intervals, -1 if below, 0 if the
    intervals overlap (the counts cannot tell the two apart)."""
    lo_a, hi_a = wilson_interval(round(a * n_a), n_a)
    n_b = n_a if n_b is None else n_b
    lo_b, hi_b = wilson_interval(round(b * n_b), n_b)
    return 1 if lo_a > hi_b else -1 if hi_a < lo_b else 0


def mean_entropy(probs: torch.Tensor) -> float:
    """Average prediction entropy in nats; ``ln K`` means no idea at all."""
    return float(-(probs * probs.clamp_min(1e-12).log()).sum(1).mean())


def class_probability(probs: torch.Tensor, cls: int) -> float:
    return float(probs[:, cls].mean())


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels.cpu()).float().mean())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` ([N, D]).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, in float64, using
    symmetric eigendecompositions (no complex square roots).
    """
    a, b = a.double(), b.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two samples on each side for a Frechet distance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(sa)
    sa_half = (v * w.clamp_min(0).sqrt()) @ v.T
    m = sa_half @ sb @ sa_half
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + sa.trace() + sb.trace() - 2 * tr_sqrt)


def sampling_digest(adapter: GenerativeAdapter) -> str:
    """Digest of everything an adapter's samples depend on: every tensor of its model's state (weights
    and buffers, by name, dtype, shape and bytes), its class, its ``config()``, its plain settings
    (public attributes: guidance scale, sampler, steps, ...), the device type and the torch version."""

    h = hashlib.sha256(weights_digest(adapter.model).encode())
    plain = {
        k: v
        for k, v in sorted(vars(adapter).items())
        if not k.startswith("_") and isinstance(v, (bool, int, float, str))
    }
    h.update(
        json.dumps(
            [type(adapter).__qualname__, adapter.config(), plain, adapter.device.type, torch.__version__],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return h.hexdigest()[:20]


@torch.no_grad()
def generate_per_class(
    adapter: GenerativeAdapter,
    classes: Sequence[int],
    n_per_class: int,
    seed: int = 0,
    batch_size: int = 1000,
    progress: bool = False,
    cache: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_class`` samples of each class, with a fixed generator so models are comparable.

    ``cache`` (default: the adapter's ``cache_samples``, true for diffusion models, whose sampling
    is the slow part of an evaluation) keeps the samples in ``$SA_CACHE_DIR/samples``, named by
    :func:`sampling_digest` and the request (classes, count, seed, batch size); any change to the
    weights or the sampler settings gives another name, so a stored file is only ever returned for
    exactly the inputs it was computed from.
    """
    classes = [int(k) for k in classes]
    cache = getattr(adapter, "cache_samples", False) if cache is None else cache
    path = None
    if cache:
        request = settings_digest({"classes": classes, "n": n_per_class, "seed": seed, "batch": batch_size})
        path = cache_dir() / "samples" / f"{sampling_digest(adapter)}-{request}.safetensors"
        if path.exists():
            t, _ = load_tensors(path)
            return t["x"], t["c"]
    g = torch.Generator().manual_seed(seed)
    xs, cs = [], []
    for cls in progress_bar(classes, desc="sampling", unit="class", disable=not progress, leave=False):
        for i in range(0, n_per_class, batch_size):
            c = torch.full((min(batch_size, n_per_class - i),), int(cls), dtype=torch.long)
            xs.append(adapter.sample(c, g).cpu())
            cs.append(c)
    x, c = torch.cat(xs), torch.cat(cs)
    if path is not None:
        save_tensors(path, {"x": x, "c": c}, {"classes": classes, "n_per_class": n_per_class, "seed": seed})
    return x, c


def evaluate_forgetting(
    adapter: GenerativeAdapter,
    classifier: nn.Module,
    forget: Sequence[int] | int,
    n_classes: int = 10,
    n_per_class: int = 1000,
    seed: int = 0,
    real: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """All forgetting and remembering metrics for one model, on ``n_per_class`` fresh samples per class.

    See :func:`evaluate_samples` for what is returned.
    """
    forget = _check_forget(forget, n_classes)
    x, c = generate_per_class(adapter, range(n_classes), n_per_class, seed, progress=progress)
    return evaluate_samples(x, c, classifier, forget, n_classes, real)


def _check_forget(forget: Sequence[int] | int, n_classes: int) -> list[int]:
    forget = [forget] if isinstance(forget, int) else list(forget)
    bad = [c for c in forget if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"forgotten classes must lie in [0, {n_classes - 1}], got {bad}")
    return forget


def evaluate_samples(
    x: torch.Tensor,
    c: torch.Tensor,
    classifier: nn.Module,
    forget: Sequence[int] | int,
    n_classes: int = 10,
    real: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Metrics of generated images ``x`` with the conditions ``c`` they were generated for.

    Returns ``entropy_forget`` and ``p_forget`` (on samples of the forgotten classes; absent
    when ``forget`` is empty), ``acc_remember`` (on samples of the others), ``acc_<k>`` per
    class, and with ``real`` test data ``fd_remember``: the Frechet distance to real images of
    the remembered classes in the classifier's feature space.
    """
    forget = _check_forget(forget, n_classes)
    remember = [k for k in range(n_classes) if k not in forget]
    c = c.cpu()
    probs, feats = classify(classifier, x)
    is_f = torch.isin(c, torch.tensor(forget, dtype=torch.long))
    out = {}
    if forget:  # an empty list evaluates a model that forgot nothing
        out["entropy_forget"] = mean_entropy(probs[is_f])
        out["p_forget"] = float(probs[is_f][torch.arange(int(is_f.sum())), c[is_f]].mean())
    out["acc_remember"] = accuracy(probs[~is_f], c[~is_f])
    for k in range(n_classes):
        if (c == k).any():
            out[f"acc_{k}"] = accuracy(probs[c == k], c[c == k])
    if real is not None:
        xr, yr = real
        keep = torch.isin(yr, torch.tensor(remember, dtype=torch.long))
        _, feats_real = classify(classifier, xr[keep])
        out["fd_remember"] = frechet_distance(feats[~is_f], feats_real)
    return out


MAX_ENTROPY_10 = math.log(10)
