import pytest
import torch

from sa_utils.core.ewc import EWCPenalty
from sa_utils.core.fisher import DiagonalFisher


def _setup(tiny_vae):
    params = tiny_vae.trainable_parameters()
    fisher = DiagonalFisher({n: torch.rand_like(p) for n, p in params.items()}, 10)
    ewc = EWCPenalty(params, fisher)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))
    return params, fisher, ewc


def test_penalty_value_matches_the_formula(tiny_vae):
    params, fisher, ewc = _setup(tiny_vae)
    expected = sum(
        float((fisher.values[n] * (p.detach() - ewc.anchor[i]).pow(2)).sum()) for i, (n, p) in enumerate(params.items())
    )
    assert ewc.value() == pytest.approx(expected, rel=1e-5)


def test_closed_form_gradient_matches_autograd(tiny_vae):
    params, _, ewc = _setup(tiny_vae)
    auto = torch.autograd.grad(7.0 * ewc.penalty_autograd(), list(params.values()))
    for p in params.values():
        p.grad = None
    value = ewc.add_grad_(7.0, with_value=True)
    assert value == pytest.approx(ewc.value(), rel=1e-6)
    for p, g in zip(params.values(), auto):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    for p in params.values():  # the default path (no value) adds the same gradient
        p.grad = None
    assert ewc.add_grad_(7.0) is None
    for p, g in zip(params.values(), auto):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_fisher_is_not_copied_and_negative_entries_are_rejected(tiny_vae):
    params = tiny_vae.trainable_parameters()
    values = {n: torch.rand_like(p) for n, p in params.items()}
    ewc = EWCPenalty(params, values)
    assert all(f.data_ptr() == values[n].data_ptr() for n, f in zip(ewc.names, ewc.fisher))
    values[next(iter(values))][0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        EWCPenalty(params, values)


def test_penalty_is_zero_at_the_anchor_and_adds_to_existing_grads(tiny_vae):
    params = tiny_vae.trainable_parameters()
    ewc = EWCPenalty(params, {n: torch.ones_like(p) for n, p in params.items()})
    for p in params.values():
        p.grad = torch.ones_like(p)
    assert ewc.add_grad_(100.0, with_value=True) == 0.0
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params.values())


def test_mismatched_fisher_is_rejected(tiny_vae):
    params = tiny_vae.trainable_parameters()
    with pytest.raises(ValueError, match="differ"):
        EWCPenalty(params, {"enc1.weight": torch.ones(1)})


def test_gradient_groups_partition_the_tensors_and_bound_the_temporary():
    from sa_utils.core.ewc import _groups

    sizes = [5, 100, 3, 3, 40, 40, 40, 1, 60]
    groups = _groups(sizes, parts=4)
    assert [i for g in groups for i in g] == list(range(len(sizes)))
    target = max(max(sizes), -(-sum(sizes) // 4))
    assert all(sum(sizes[i] for i in g) <= target or len(g) == 1 for g in groups)
    assert len(groups) > 1
