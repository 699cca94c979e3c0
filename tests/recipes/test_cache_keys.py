"""Issue 16, item 1: every cached result is named by the exact weights (and data) it came from.

A student who swaps the base model in an exercise must get a Fisher and an SA run of *that* model,
never the cached result of another one with the same recipe.
"""

from __future__ import annotations

import torch
from conftest import TINY

from sa_utils.adapters import VAEAdapter
from sa_utils.models import CVAE
from sa_utils.recipes import mnist_vae
from sa_utils.storage.checkpoint import tensors_digest, weights_digest


def _cvae(seed: int) -> VAEAdapter:
    torch.manual_seed(seed)
    return VAEAdapter(CVAE(TINY))


def test_weights_digest_sees_one_changed_weight_and_buffers():
    a = _cvae(0)
    before = weights_digest(a.model)
    assert weights_digest(_cvae(0).model) == before  # same weights, same name
    with torch.no_grad():
        next(a.model.parameters()).view(-1)[0] += 1e-6
    assert weights_digest(a.model) != before
    assert tensors_digest({"x": torch.zeros(3)}) != tensors_digest({"x": torch.zeros(4)})
    assert tensors_digest({"x": torch.zeros(2, dtype=torch.bfloat16)}) != tensors_digest({"x": torch.zeros(2)})


def test_a_foreign_base_model_gets_its_own_fisher_and_run(cache):
    r = mnist_vae.recipe("quick", fisher_samples=40, fisher_batch=20, sa_batch=8, sa_steps=3)
    mine, foreign = _cvae(0), _cvae(1)
    f_mine, f_foreign = (
        mnist_vae.mnist_fisher(mine, r, progress=False),
        mnist_vae.mnist_fisher(foreign, r, progress=False),
    )
    assert not all(torch.equal(f_mine.values[k], f_foreign.values[k]) for k in f_mine.values)
    assert len(list((cache / "mnist").glob("fisher-*.safetensors"))) == 2
    a, ra = mnist_vae.forget_digits(mine, r, 0, progress=False)
    b, rb = mnist_vae.forget_digits(foreign, r, 0, progress=False)
    assert ra.resumed_from == 0 and rb.resumed_from == 0  # the second run was trained, not loaded
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))
    again, r2 = mnist_vae.forget_digits(mine, r, 0, progress=False)  # the same model finds its own run
    assert r2.resumed_from == 3
    assert all(torch.equal(x, y) for x, y in zip(again.model.parameters(), a.model.parameters()))
    # and a Fisher handed in explicitly is part of the key too
    _, r3 = mnist_vae.forget_digits(mine, r, 0, fisher=f_foreign, progress=False)
    assert r3.resumed_from == 0
