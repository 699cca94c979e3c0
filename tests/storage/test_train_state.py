"""sa_utils.storage.train_state: the one checkpoint format (modules, optimizers, extra tensors)."""

from __future__ import annotations

import json

import pytest
import torch

from sa_utils.storage.checkpoint import CheckpointError, optimizer_to_tensors, save_tensors
from sa_utils.storage.train_state import load_train_state, save_train_state


def _trained(seed: int):
    torch.manual_seed(seed)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        loss = b(a(torch.randn(4, 3))).pow(2).sum()
        opt_a.zero_grad(), opt_b.zero_grad()
        loss.backward()
        opt_a.step(), opt_b.step()
    return a, b, opt_a, opt_b


def test_round_trip_restores_every_part_exactly(tmp_path):
    a, b, opt_a, opt_b = _trained(0)
    ema = {n: p.detach() * 0.5 for n, p in a.named_parameters()}
    path = save_train_state(
        tmp_path / "s.safetensors", {"a": a, "b": b}, {"optim": opt_a, "b_optim": opt_b}, {"ema": ema}, {"step": 3}
    )
    a2, b2, opt_a2, opt_b2 = _trained(1)  # other weights and optimizer state
    groups, meta = load_train_state(path, {"a": a2, "b": b2}, {"optim": opt_a2, "b_optim": opt_b2}, ("ema",))
    assert meta["step"] == 3
    for m, m2 in ((a, a2), (b, b2)):
        for (n, p), p2 in zip(m.state_dict().items(), m2.state_dict().values()):
            assert torch.equal(p, p2), n
    for o, o2 in ((opt_a, opt_a2), (opt_b, opt_b2)):
        t, m = optimizer_to_tensors(o)
        t2, m2 = optimizer_to_tensors(o2)
        assert json.dumps(m) == json.dumps(m2) and all(torch.equal(t[k], t2[k]) for k in t)  # (tuples: JSON lists)
    assert all(torch.equal(ema[n], groups["ema"][n]) for n in ema)


def test_a_missing_part_is_refused_by_name(tmp_path):
    a, b, opt_a, _ = _trained(0)
    path = save_train_state(tmp_path / "s.safetensors", {"model": a}, {"optim": opt_a})
    with pytest.raises(CheckpointError, match="'unet'"):
        load_train_state(path, {"unet": a})
    with pytest.raises(CheckpointError, match="optimizer 'vae_optim'"):
        load_train_state(path, {"model": a}, {"vae_optim": opt_a})
    with pytest.raises(ValueError, match="share a prefix"):
        save_train_state(tmp_path / "t.safetensors", {"x": a}, {"x": opt_a})


def test_files_from_before_the_one_format_still_resume(tmp_path):
    """SA run folders written by session 11's code keep their single ``optimizer`` metadata entry."""
    a, _, opt_a, _ = _trained(0)
    opt_t, opt_m = optimizer_to_tensors(opt_a)
    old = save_tensors(
        tmp_path / "old.safetensors",
        {**{f"model.{k}": v for k, v in a.state_dict().items()}, **opt_t},
        {"optimizer": opt_m, "step": 7},
    )
    a2, _, opt_a2, _ = _trained(1)
    _, meta = load_train_state(old, {"model": a2}, {"optim": opt_a2})
    assert meta["step"] == 7 and torch.equal(a.weight, a2.weight)
    assert json.dumps(optimizer_to_tensors(opt_a2)[1]) == json.dumps(opt_m)
