"""Elastic weight consolidation: a quadratic pull towards theta*, weighted by the Fisher (chapter 3).

    penalty(theta) = sum_i F_i (theta_i - theta*_i)^2

(the 1/2 of the Laplace approximation is folded into lambda, as in the authors' code).
The gradient, ``2 F (theta - theta*)``, is known in closed form, so :meth:`EWCPenalty.add_grad_`
adds it straight into ``.grad`` with fused ``torch._foreach_*`` kernels: no autograd graph,
no Python loop over elements, no copies of the model per step.
"""
from __future__ import annotations

import torch
from torch import nn

from .fisher import DiagonalFisher


class EWCPenalty:
    def __init__(
        self,
        params: dict[str, nn.Parameter],
        fisher: DiagonalFisher | dict[str, torch.Tensor],
        anchor: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | None = None,
    ):
        """``params``: the trainable parameters by name; ``anchor``: theta* (default: their
        current values). ``dtype`` may store F and theta* in lower precision (e.g. fp16)."""
        values = fisher.values if isinstance(fisher, DiagonalFisher) else fisher
        if isinstance(fisher, DiagonalFisher):
            fisher.check_matches(params)
        elif set(values) != set(params):
            raise ValueError(f"Fisher names differ from the trainable parameters: {sorted(set(values) ^ set(params))[:6]}")
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        src = anchor if anchor is not None else {n: p.detach() for n, p in params.items()}
        self.anchor = [src[n].detach().to(device=p.device, dtype=dtype or p.dtype).clone() for n, p in zip(self.names, self.params)]
        # keep sqrt(F): penalty = sum ||sqrt(F) * d||^2 and grad = 2 sqrt(F) * (sqrt(F) * d)
        self.sqrt_f = [values[n].to(device=p.device, dtype=dtype or p.dtype).clamp_min(0).sqrt() for n, p in zip(self.names, self.params)]

    def _scaled_diff(self) -> list[torch.Tensor]:
        data = [p.detach() for p in self.params]
        if self.anchor[0].dtype != data[0].dtype:
            anchor = [a.to(d.dtype) for a, d in zip(self.anchor, data)]
            sqrt_f = [s.to(d.dtype) for s, d in zip(self.sqrt_f, data)]
        else:
            anchor, sqrt_f = self.anchor, self.sqrt_f
        diff = torch._foreach_sub(data, anchor)
        torch._foreach_mul_(diff, sqrt_f)
        return diff, sqrt_f

    @torch.no_grad()
    def value(self) -> float:
        """The penalty ``sum_i F_i (theta_i - theta*_i)^2``."""
        diff, _ = self._scaled_diff()
        return float(torch.stack(torch._foreach_norm(diff)).pow(2).sum())

    @torch.no_grad()
    def add_grad_(self, lmbda: float) -> float:
        """Add ``lmbda * d/dtheta penalty`` to every parameter's ``.grad``; return the penalty."""
        diff, sqrt_f = self._scaled_diff()
        penalty = torch.stack(torch._foreach_norm(diff)).pow(2).sum()
        torch._foreach_mul_(diff, sqrt_f)  # now F * (theta - theta*)
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch._foreach_add_([p.grad for p in self.params], diff, alpha=2.0 * lmbda)
        return float(penalty)

    def penalty_autograd(self) -> torch.Tensor:
        """Differentiable penalty (for tests and teaching; :meth:`add_grad_` is what training uses)."""
        total = 0.0
        for p, a, s in zip(self.params, self.anchor, self.sqrt_f):
            total = total + (s.to(p.dtype).pow(2) * (p - a.to(p.dtype)).pow(2)).sum()
        return total
