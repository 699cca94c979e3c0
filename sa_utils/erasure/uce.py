"""Unified Concept Editing (UCE; Gandikota, Orgad, Belinkov, Materzynska and Bau, WACV 2024): a
closed-form edit of the cross-attention key and value projections, no training.

Every cross-attention layer reads the prompt through two linear maps, ``to_k`` and ``to_v``
(weights ``W`` of shape ``[inner, D]``, applied to each token embedding ``c`` in ``R^D``). UCE picks,
for every such ``W``, the matrix that solves

    min_W   lamb * ||W - W_old||_F^2
          + erase_scale    * sum_i ||W c_i - W_old g_i||^2      (concept i's embedding -> its guide's output)
          + preserve_scale * sum_j ||W p_j - W_old p_j||^2      (preserved concepts keep their outputs)

whose solution (equation 7 of the paper) is

    W = (lamb W_old + erase_scale sum_i W_old g_i c_i^T + preserve_scale sum_j W_old p_j p_j^T)
        (lamb I     + erase_scale sum_i c_i c_i^T       + preserve_scale sum_j p_j p_j^T)^-1 .

As in the authors' script (github rohitgandikota/unified-concept-editing,
``trainscripts/uce_sd_erase.py``), a concept's embedding ``c`` is the text encoder's output at the
concept's last token (the one before the end-of-text token), the edited maps are every ``attn2``
``to_k`` and ``to_v``, and the defaults are ``lamb = 0.5``, ``erase_scale = preserve_scale = 1``.
Here the linear system is solved in float64 rather than inverted in float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sa_utils.adapters.sd import StableDiffusionAdapter


@dataclass(frozen=True)
class UCEConfig:
    """What to erase, towards what, what to keep, and how hard (the authors' defaults)."""

    erase: tuple[str, ...]
    guide: tuple[str, ...] = ()
    """One guide per erased concept (``""`` for each when empty: the unconditional output)."""
    preserve: tuple[str, ...] = ()
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    lamb: float = 0.5
    projections: tuple[str, ...] = field(default=("to_k", "to_v"))

    def __post_init__(self):
        if not self.erase or not all(isinstance(c, str) and c.strip() for c in self.erase):
            raise ValueError(f"UCE needs at least one non-empty concept to erase, got {self.erase!r}")
        if self.guide and len(self.guide) != len(self.erase):
            raise ValueError(
                f"give one guide concept per erased concept ({len(self.erase)}), got {len(self.guide)}; "
                "or none, to guide every concept to the empty prompt"
            )
        for name in ("erase_scale", "preserve_scale", "lamb"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lamb == 0 and not self.preserve:
            raise ValueError("lamb = 0 with nothing preserved leaves the edit underdetermined; keep lamb > 0")
        if not set(self.projections) <= {"to_k", "to_v"} or not self.projections:
            raise ValueError(f"projections must be a non-empty subset of ('to_k', 'to_v'), got {self.projections}")

    @property
    def guides(self) -> tuple[str, ...]:
        return self.guide or ("",) * len(self.erase)

    def to_dict(self) -> dict:
        return asdict(self)


def edited_layers(unet: nn.Module, projections: tuple[str, ...] = ("to_k", "to_v")) -> dict[str, nn.Linear]:
    """The cross-attention projections UCE edits, by module name."""
    return {
        name: m
        for name, m in unet.named_modules()
        if ".attn2." in f".{name}." and name.rsplit(".", 1)[-1] in projections and isinstance(m, nn.Linear)
    }


@torch.no_grad()
def concept_embedding(adapter: StableDiffusionAdapter, concept: str) -> torch.Tensor:
    """The text encoder's output at ``concept``'s last token (the one before end-of-text), ``[D]``, in
    float64; for the empty prompt that index is 0, the start-of-text token, as in the authors' code."""
    tok = adapter.pipeline.tokenizer
    mask = tok(concept, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    last = int(mask.attention_mask.sum()) - 2
    return adapter.encode_prompts([concept])[0, last].double()


@torch.no_grad()
def uce_weights(adapter: StableDiffusionAdapter, config: UCEConfig) -> dict[str, torch.Tensor]:
    """The edited weight of every projection in :func:`edited_layers` (nothing is changed in place)."""
    emb = {c: concept_embedding(adapter, c) for c in {*config.erase, *config.guides, *config.preserve}}
    out = {}
    for name, layer in edited_layers(adapter.model, config.projections).items():
        w_old = layer.weight.detach().double()
        left = config.lamb * w_old
        right = config.lamb * torch.eye(w_old.shape[1], dtype=torch.float64, device=w_old.device)
        for concept, guide in zip(config.erase, config.guides):
            c, g = emb[concept].to(w_old.device), emb[guide].to(w_old.device)
            left += config.erase_scale * torch.outer(w_old @ g, c)
            right += config.erase_scale * torch.outer(c, c)
        for concept in config.preserve:
            p = emb[concept].to(w_old.device)
            left += config.preserve_scale * torch.outer(w_old @ p, p)
            right += config.preserve_scale * torch.outer(p, p)
        # W right = left, right symmetric: solve right W^T = left^T
        out[name] = torch.linalg.solve(right, left.T).T.to(layer.weight.dtype)
    return out


def apply_uce(adapter: StableDiffusionAdapter, config: UCEConfig) -> dict[str, float]:
    """Edit the pipeline's UNet in place; returns the relative change ``||W - W_old|| / ||W_old||`` per layer."""
    new = uce_weights(adapter, config)
    layers = edited_layers(adapter.model, config.projections)
    change = {}
    with torch.no_grad():
        for name, w in new.items():
            old = layers[name].weight
            change[name] = float((w - old).norm() / old.norm())
            old.copy_(w)
    return change
