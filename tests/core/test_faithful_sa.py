"""SA as the authors' code runs it: loss reductions owned by each adapter, the EWC-to-data ratio
they imply, a Fisher that survives half precision, gradient accumulation and an EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sa_utils.adapters.base import GenerativeAdapter
from sa_utils.adapters.ddpm import DDPMAdapter
from sa_utils.core.amnesia import SAConfig, selective_amnesia
from sa_utils.core.ewc import EWCPenalty
from sa_utils.core.fisher import DiagonalFisher, TimestepSum, diagonal_fisher
from sa_utils.models.unet import UNetConfig, build_unet
from sa_utils.runtime import step_generator

TINY_UNET = UNetConfig(block_out_channels=(8, 16), norm_num_groups=4)
T = 10


def _authors_fisher(model, x, c, ab, gens):
    """The authors' ``save_fim`` for a DDPM, written out here independently of sa_utils: per sample,
    add sum_pixels (eps - eps_theta(x_t, t, c))^2 over every t with fresh noise, backward, square."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    for b in range(len(x)):
        g = gens[b]
        t_all = torch.arange(T)
        eps_all = torch.randn((T, *x.shape[1:]), generator=g)
        acc = [torch.zeros_like(p) for p in params]
        for t, eps in zip(t_all, eps_all):
            x0 = x[b : b + 1] * 2 - 1
            xt = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps[None]
            loss = (eps[None] - model(xt, t[None], class_labels=c[b : b + 1]).sample).square().sum()
            for a, gr in zip(acc, torch.autograd.grad(loss, params)):
                a += gr
        for o, a in zip(out, acc):
            o += a.square() / len(x)
    return out


def test_ewc_to_data_ratio_at_a_fixed_displacement_is_the_authors():
    torch.manual_seed(0)
    adapter = DDPMAdapter(build_unet(TINY_UNET), TINY_UNET, num_train_timesteps=T)
    g = torch.Generator().manual_seed(5)
    xs, cs = torch.rand(3, 1, 28, 28, generator=g), torch.tensor([1, 2, 3])
    fisher = diagonal_fisher(adapter, [{"x": xs, "c": cs}], estimator=TimestepSum(), seed=4, progress=False)
    ab = adapter.noise_scheduler.alphas_cumprod.float()
    ref = _authors_fisher(adapter.model, xs, cs, ab, [step_generator(4, b) for b in range(3)])
    for f, r in zip(fisher.values.values(), ref):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-6 * float(max(v.max() for v in ref)))

    theta_star = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    d = {
        n: 1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
        for i, (n, p) in enumerate(adapter.model.named_parameters())
    }
    with torch.no_grad():
        for n, p in adapter.model.named_parameters():
            p.add_(d[n])
    x_f, c_f = torch.rand(4, 1, 28, 28, generator=g), torch.zeros(4, dtype=torch.long)
    x_r, c_r = torch.rand(4, 1, 28, 28, generator=g), torch.tensor([1, 2, 3, 10])
    lmbda, gamma = 10.0, 1.0
    cfg = SAConfig(lmbda=lmbda, gamma=gamma, steps=1, lr=0.0, log_every=1, seed=0)
    res = selective_amnesia(
        adapter,
        lambda s: {"x": x_f, "c": c_f},
        lambda s: {"x": x_r, "c": c_r},
        fisher,
        cfg,
        anchor=theta_star,
        progress=False,
    )
    row = res.history[0]

    # independently: the same noise draws, the authors' reductions (pixel sum, batch mean)
    gen = step_generator(104729, 0)

    def data_term(x, c):
        b = adapter.draw_noise({"x": x, "c": c}, gen)
        with torch.no_grad():
            xt = (
                ab[b["t"]].view(-1, 1, 1, 1).sqrt() * (x * 2 - 1) + (1 - ab[b["t"]]).view(-1, 1, 1, 1).sqrt() * b["eps"]
            )
            pred = adapter.model(xt, b["t"], class_labels=c).sample
        return float((b["eps"] - pred).square().sum((1, 2, 3)).mean())

    want_f, want_r = data_term(x_f, c_f), data_term(x_r, c_r)
    want_ewc = sum(float((r * d[n].square()).sum()) for n, r in zip(fisher.values, ref))
    assert row["forget_loss"] == pytest.approx(want_f, rel=1e-4)
    assert row["replay_loss"] == pytest.approx(want_r, rel=1e-4)
    assert row["ewc_penalty"] == pytest.approx(want_ewc, rel=1e-3)
    ratio = lmbda * row["ewc_penalty"] / (row["forget_loss"] + gamma * row["replay_loss"])
    assert ratio == pytest.approx(lmbda * want_ewc / (want_f + gamma * want_r), rel=1e-3)


def test_half_precision_keeps_the_fisher():
    torch.manual_seed(0)
    adapter = DDPMAdapter(build_unet(TINY_UNET), TINY_UNET, num_train_timesteps=T)
    xs, cs = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    fisher = diagonal_fisher(adapter, [{"x": xs, "c": cs}], estimator=TimestepSum(), progress=False)
    # spread the entries over as many decades as a real diffusion Fisher (MNIST DDPM: ~1e-14 .. 1e4)
    wide = DiagonalFisher(
        {
            n: v * 10.0 ** torch.randint(-14, 2, v.shape, generator=torch.Generator().manual_seed(1)).double().float()
            for n, v in fisher.values.items()
        },
        2,
    )
    params = adapter.trainable_parameters()
    full = EWCPenalty(params, wide)
    half = EWCPenalty(params, wide.to("cpu", torch.float16), dtype=torch.float16)
    assert all(f.dtype == torch.bfloat16 for f in half.fisher)
    nz = wide.flat() != 0
    kept = torch.cat([f.float().flatten() for f in half.fisher])[nz] != 0
    assert float(kept.float().mean()) >= 0.999
    assert float((wide.flat().half()[nz] == 0).float().mean()) > 0.3  # what float16 itself would have lost
    with torch.no_grad():
        for i, p in enumerate(params.values()):
            p.add_(1e-2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    assert half.value() == pytest.approx(full.value(), rel=0.01)


class _Linear(GenerativeAdapter):
    """A deterministic toy model (no noise draws): the SA routine's arithmetic, nothing else."""

    batch_reduction = "mean"

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(3, 2)

    def loss(self, batch):
        return (self.model(batch["x"]) - batch["c"]).square().sum(1)

    def draw_noise(self, batch, generator=None):
        return batch

    def sample(self, c, generator=None):
        return torch.zeros(len(c), 3)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)


def test_gradient_accumulation_equals_the_large_batch():
    xf, cf = _data(8 * 3, 0)
    xr, cr = _data(8 * 3, 1)
    big = _Linear()
    selective_amnesia(
        big,
        lambda s: {"x": xf[8 * s : 8 * s + 8], "c": cf[8 * s : 8 * s + 8]},
        lambda s: {"x": xr[8 * s : 8 * s + 8], "c": cr[8 * s : 8 * s + 8]},
        None,
        SAConfig(lmbda=0, steps=3, lr=1e-2, log_every=1),
        progress=False,
    )
    small = _Linear()
    res = selective_amnesia(
        small,
        lambda m: {"x": xf[4 * m : 4 * m + 4], "c": cf[4 * m : 4 * m + 4]},
        lambda m: {"x": xr[4 * m : 4 * m + 4], "c": cr[4 * m : 4 * m + 4]},
        None,
        SAConfig(lmbda=0, steps=3, lr=1e-2, log_every=1, grad_accum=2),
        progress=False,
    )
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(res.history) == 3


def test_ema_is_the_average_of_the_raw_weights_and_resumes_exactly(tmp_path):
    xf, cf = _data(4, 0)
    src = lambda s: {"x": xf, "c": cf}  # noqa: E731
    a = _Linear()
    raw = []
    start = [p.detach().clone() for p in a.model.parameters()]
    cfg = SAConfig(lmbda=0, gamma=0, steps=4, lr=1e-1, log_every=1, ema_decay=0.5, optimizer="adamw", weight_decay=0.01)
    selective_amnesia(
        a,
        src,
        None,
        None,
        cfg,
        progress=False,
        on_step=lambda s, row: raw.append([p.detach().clone() for p in a.model.parameters()]),
    )
    ema = start
    for r in raw:
        ema = [0.5 * e + 0.5 * x for e, x in zip(ema, r)]
    for p, e in zip(a.model.parameters(), ema):
        torch.testing.assert_close(p.detach(), e)
    b = _Linear()
    selective_amnesia(
        b,
        src,
        None,
        None,
        SAConfig(**{**cfg.to_dict(), "steps": 2, "checkpoint_every": 1}),
        run_dir=tmp_path,
        progress=False,
    )
    c = _Linear()
    selective_amnesia(
        c, src, None, None, SAConfig(**{**cfg.to_dict(), "checkpoint_every": 1}), run_dir=tmp_path, progress=False
    )
    for p, q in zip(a.model.parameters(), c.model.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="ema_decay"):
        selective_amnesia(
            _Linear(), src, None, None, SAConfig(lmbda=0, gamma=0, steps=1, ema_decay=1.5), progress=False
        )
