"""Benchmark: one Selective Amnesia step vs one plain fine-tuning step, time and peak memory.

    python benchmarks/sa_step.py [--models cvae ddpm] [--steps 20] [--repeats 5]

Both variants train a fresh copy of the same model on the *same* forget and replay batches
with the same loss draws and Adam; the SA step is ``sa_utils.amnesia.selective_amnesia``
itself (EWC gradient, NaN guard, logging), the fine-tuning step a bare
``zero_grad / (loss_f + loss_r).backward() / step`` loop. Time per step is the median over
interleaved repeats, so both see the same machine load. Peak memory is measured in a fresh
subprocess per variant: on CUDA ``torch.cuda.max_memory_allocated``; on a CPU the growth of
the process's peak resident set over its size before the model was built (model, batches,
gradients, optimizer state, Fisher, theta*, activations).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
from common import machine

from sa_utils.amnesia import SAConfig, selective_amnesia
from sa_utils.fisher import DiagonalFisher

warnings.filterwarnings("ignore", message=".*batching rule.*")

BATCH = {"cvae": 256, "ddpm": 32}  # the authors' MNIST batch; Part II quick mode


def build(model: str, device: torch.device):
    torch.manual_seed(0)
    if model == "cvae":
        from sa_utils.adapters import VAEAdapter
        from sa_utils.models import CVAE

        return VAEAdapter(CVAE().to(device)), (1, 28, 28)
    from sa_utils.adapters.ddpm import DDPMAdapter
    from sa_utils.models.unet import MNIST_UNET, build_unet

    return DDPMAdapter(build_unet(MNIST_UNET).to(device), MNIST_UNET), (1, 28, 28)


def make_batches(shape, n_steps: int, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    forget = [{"x": torch.rand(batch, *shape, generator=g).to(device), "c": torch.zeros(batch, dtype=torch.long, device=device)}
              for _ in range(n_steps)]
    replay = [{"x": torch.rand(batch, *shape, generator=g).to(device),
               "c": torch.randint(1, 10, (batch,), generator=g).to(device)} for _ in range(n_steps)]
    return forget, replay


def fisher_for(adapter) -> DiagonalFisher:
    g = torch.Generator().manual_seed(2)
    return DiagonalFisher({n: torch.rand(p.shape, generator=g) for n, p in adapter.trainable_parameters().items()}, 1)


def run_sa(adapter, forget, replay, fisher, steps: int) -> None:
    cfg = SAConfig(lmbda=10.0, gamma=1.0, steps=steps, lr=1e-4, checkpoint_every=0, log_every=10)
    selective_amnesia(adapter, lambda s: forget[s], lambda s: replay[s], fisher, cfg, progress=False)


def run_finetune(adapter, forget, replay, steps: int) -> None:
    from sa_utils.runtime import step_generator

    params = list(adapter.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=1e-4)
    adapter.model.train()
    for step in range(steps):
        g = step_generator(104729, step)
        opt.zero_grad(set_to_none=True)
        loss = adapter.loss(adapter.draw_noise(forget[step], g)).sum() + adapter.loss(adapter.draw_noise(replay[step], g)).sum()
        loss.backward()
        opt.step()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_model(model: str, steps: int, repeats: int, device: torch.device) -> dict:
    adapter, shape = build(model, device)
    forget, replay = make_batches(shape, steps, BATCH[model], device)
    fisher = fisher_for(adapter)
    state = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    times = {"finetune": [], "sa": []}
    for rep in range(repeats + 1):  # the first round warms up and is not counted
        for name in ("finetune", "sa") if rep % 2 else ("sa", "finetune"):
            adapter.model.load_state_dict(state)
            adapter.model.requires_grad_(True)
            sync(device)
            start = time.perf_counter()
            if name == "sa":
                run_sa(adapter, forget, replay, fisher, steps)
            else:
                run_finetune(adapter, forget, replay, steps)
            sync(device)
            if rep:
                times[name].append((time.perf_counter() - start) / steps)
    ft, sa = statistics.median(times["finetune"]), statistics.median(times["sa"])
    n = sum(p.numel() for p in adapter.model.parameters())
    return {"model": model, "params": n, "batch": BATCH[model], "finetune_ms": 1e3 * ft, "sa_ms": 1e3 * sa, "time_ratio": sa / ft}


def peak_memory(model: str, variant: str, steps: int, device: str) -> float:
    """Peak bytes of one variant, measured in this (fresh) process."""
    dev = torch.device(device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    adapter, shape = build(model, dev)
    forget, replay = make_batches(shape, steps, BATCH[model], dev)
    if variant == "sa":
        run_sa(adapter, forget, replay, fisher_for(adapter), steps)
    else:
        run_finetune(adapter, forget, replay, steps)
    if dev.type == "cuda":
        return float(torch.cuda.max_memory_allocated())
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss)


def measure_memory(model: str, steps: int, device: str) -> dict:
    out = {}
    for variant in ("finetune", "sa"):
        code = (f"import sys; sys.path.insert(0, 'benchmarks'); import sa_step; "
                f"print(sa_step.peak_memory({model!r}, {variant!r}, {steps}, {device!r}))")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out[variant] = float(res.stdout.strip().splitlines()[-1])
    return {"finetune_mb": out["finetune"] / 2**20, "sa_mb": out["sa"] / 2**20, "memory_ratio": out["sa"] / out["finetune"]}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cvae", "ddpm"], choices=["cvae", "ddpm"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"SA step vs fine-tuning step, {args.steps} steps x {args.repeats} repeats, {device}, {machine()}")
    rows = []
    for model in args.models:
        row = time_model(model, args.steps, args.repeats, device)
        row.update(measure_memory(model, min(args.steps, 5), str(device)))
        rows.append(row)
    print(f"{'model':<6}{'params':>11}{'batch':>7}{'fine-tune ms':>14}{'SA ms':>9}{'ratio':>7}{'target':>8}"
          f"{'FT MiB':>9}{'SA MiB':>9}{'ratio':>7}{'target':>8}")
    for r in rows:
        print(f"{r['model']:<6}{r['params']:>11,}{r['batch']:>7}{r['finetune_ms']:>14.1f}{r['sa_ms']:>9.1f}"
              f"{r['time_ratio']:>7.2f}{'<=1.2':>8}{r['finetune_mb']:>9.1f}{r['sa_mb']:>9.1f}{r['memory_ratio']:>7.2f}{'<=1.3':>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
