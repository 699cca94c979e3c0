"""Elastic weight consolidation: a quadratic pull towards theta*, weighted by the Fisher (chapter 3).

    penalty(theta) = sum_i F_i (theta_i - theta*_i)^2

(the 1/2 of the Laplace approximation is folded into lambda, as in the authors' code).
The gradient, ``2 F (theta - theta*)``, is known in closed form, so :meth:`EWCPenalty.add_grad_`
adds it straight into ``.grad`` with fused ``torch._foreach_*`` kernels: no autograd graph,
no Python loop over elements, no copies of the model per step. F is kept as given (no copy
when it is already on the parameters' device and dtype), so the memory SA needs beyond plain
fine-tuning is theta* and F: two parameter-sized buffers, the least EWC can hold, plus a
temporary of about 1/8 of the model while the gradient is added.
"""

from __future__ import annotations

import torch
from torch import nn

from sa_utils.core.fisher import DiagonalFisher


class EWCPenalty:
    def __init__(
        self,
        params: dict[str, nn.Parameter],
        fisher: DiagonalFisher | dict[str, torch.Tensor],
        anchor: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | None = None,
    ):
        """``params``: the trainable parameters by name; ``anchor``: theta* (default: their
        current values). ``dtype`` may store theta* in lower precision (``torch.float16`` or
        ``torch.bfloat16``) to halve EWC's memory; F is then kept in **bfloat16** either way:
        a diffusion Fisher spans many decades, and float16's range (6e-8 .. 65504) would flush
        most entries to zero or overflow the largest (measured on the MNIST DDPM: 87 % of the
        entries became 0), while bfloat16 has float32's exponent range."""
        values = fisher.values if isinstance(fisher, DiagonalFisher) else fisher
        if isinstance(fisher, DiagonalFisher):
            fisher.check_matches(params)
        elif set(values) != set(params):
            raise ValueError(
                f"Fisher names differ from the trainable parameters: {sorted(set(values) ^ set(params))[:6]}"
            )
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        src = anchor if anchor is not None else {n: p.detach() for n, p in params.items()}
        self.anchor = [
            src[n].detach().to(device=p.device, dtype=dtype or p.dtype).clone() for n, p in zip(self.names, self.params)
        ]
        f_dtype = torch.bfloat16 if dtype in (torch.float16, torch.bfloat16) else (dtype or None)
        self.fisher = [
            values[n].detach().to(device=p.device, dtype=f_dtype or p.dtype) for n, p in zip(self.names, self.params)
        ]
        # the gradient is built group by group, so its temporary is at most ~1/8 of the model
        # (or its largest tensor): a few fused kernels per group, no model-sized temporary
        self.groups = _groups([p.numel() for p in self.params], parts=8)
        lowest = float(torch.stack([f.min() for f in self.fisher]).min())
        if lowest < 0:
            raise ValueError(
                f"the Fisher has a negative entry ({lowest:.3g}); a diagonal Fisher is a mean of squared "
                "gradients and is never negative. Recompute it (sa_utils.core.fisher.diagonal_fisher) or check the "
                "file."
            )

    def _diff(self, idx: range | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(theta - theta*, F)`` for the tensors ``idx`` (default all), in the parameters' dtype."""
        idx = range(len(self.params)) if idx is None else idx
        data = [self.params[i].detach() for i in idx]
        anchor, fisher = [self.anchor[i] for i in idx], [self.fisher[i] for i in idx]
        if anchor[0].dtype != data[0].dtype:
            anchor = [a.to(d.dtype) for a, d in zip(anchor, data)]
        if fisher[0].dtype != data[0].dtype:
            fisher = [f.to(d.dtype) for f, d in zip(fisher, data)]
        return torch._foreach_sub(data, anchor), fisher

    @staticmethod
    def _weighted_sq_sum(diff: list[torch.Tensor], fisher: list[torch.Tensor]) -> float:
        """``sum_i F_i d_i^2``, one tensor at a time so the only temporary is one tensor's size."""
        return float(sum(torch.vdot(d.flatten(), (f * d).flatten()) for d, f in zip(diff, fisher)))

    @torch.no_grad()
    def value(self) -> float:
        """The penalty ``sum_i F_i (theta_i - theta*_i)^2``."""
        return sum(self._weighted_sq_sum(*self._diff(g)) for g in self.groups)

    @torch.no_grad()
    def add_grad_(self, lmbda: float, with_value: bool = False) -> float | None:
        """Add ``lmbda * d/dtheta penalty = 2 lmbda F (theta - theta*)`` to every ``.grad``.

        The temporary is one group of tensors (about 1/8 of the model). Returns the penalty when
        ``with_value`` (a loop over the tensors, run by the SA routine only on the steps it logs),
        else ``None``.
        """
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        value = 0.0
        for g in self.groups:
            diff, fisher = self._diff(g)
            if with_value:
                value += self._weighted_sq_sum(diff, fisher)
            torch._foreach_mul_(diff, fisher)  # in place: F (theta - theta*)
            torch._foreach_add_([self.params[i].grad for i in g], diff, alpha=2.0 * lmbda)
        return value if with_value else None

    def penalty_autograd(self) -> torch.Tensor:
        """Differentiable penalty (for tests and teaching; :meth:`add_grad_` is what training uses)."""
        total = 0.0
        for p, a, f in zip(self.params, self.anchor, self.fisher):
            total = total + (f.to(p.dtype) * (p - a.to(p.dtype)).pow(2)).sum()
        return total


def _groups(sizes: list[int], parts: int) -> list[range]:
    """Consecutive index ranges whose total size is about ``sum(sizes) / parts`` (at least one tensor each)."""
    target = max(max(sizes, default=0), -(-sum(sizes) // parts))
    groups, start, acc = [], 0, 0
    for i, n in enumerate(sizes):
        if acc and acc + n > target:
            groups.append(range(start, i))
            start, acc = i, 0
        acc += n
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups
