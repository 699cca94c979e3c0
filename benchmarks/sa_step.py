"""Benchmarks 2 and 4: one Selective Amnesia step vs one plain fine-tuning step, time and peak memory.

    python benchmarks/sa_step.py [--models cvae ddpm] [--steps 20] [--repeats 5]
    python benchmarks/sa_step.py --optimizers [--models cvae ddpm] [--store]   # fused Adam, joined batches

Both variants train a fresh copy of the same model on the *same* forget and replay batches
with the same loss noise and Adam. The SA step is ``sa_utils.core.amnesia.selective_amnesia``
itself (EWC gradient, NaN guard, logging every 10 steps); the fine-tuning step is a bare
``zero_grad / (loss_forget + loss_replay).backward() / step`` loop. Time per step is the
median over interleaved repeats, so both see the same machine load.

Peak memory is the peak of bytes held by live tensors during the run
(:class:`sa_utils.eval.memory.PeakTensorMemory`): parameters, gradients, Adam state, activations and
temporaries, plus the Fisher for SA, which SA needs and fine-tuning does not. Any EWC
implementation must also hold theta*, so SA's floor is fine-tuning + 2 x parameter bytes;
the table prints that floor next to the measured ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import warnings
from pathlib import Path

import torch
from common import PeakTensorMemory, device, interleaved, machine, print_table

from sa_utils.core.amnesia import SAConfig, selective_amnesia
from sa_utils.core.fisher import DiagonalFisher
from sa_utils.recipes.sd_memory import finetune_steps, random_fisher

warnings.filterwarnings("ignore", message=".*batching rule.*")

MODELS = ("cvae", "ddpm", "sd")
BATCH = {"cvae": 256, "ddpm": 32, "sd": 16}  # the authors' MNIST batch; Part II quick mode; tiny SD


def build(model: str, dev: torch.device, width: float = 1.0):
    """A fresh model; ``width`` scales the hidden sizes (the scaling benchmark)."""
    torch.manual_seed(0)
    if model == "cvae":
        from sa_utils.adapters import VAEAdapter
        from sa_utils.models import CVAE, CVAEConfig

        base = CVAEConfig()
        cfg = CVAEConfig(h_dims=tuple(max(8, int(h * width)) for h in base.h_dims), z_dim=base.z_dim)
        return VAEAdapter(CVAE(cfg).to(dev)), (1, 28, 28)
    if model == "sd":
        return _tiny_sd(dev, width)
    from dataclasses import replace

    from sa_utils.adapters.ddpm import DDPMAdapter
    from sa_utils.models.unet import MNIST_UNET, build_unet

    cfg = replace(MNIST_UNET, block_out_channels=tuple(max(8, int(c * width)) for c in MNIST_UNET.block_out_channels))
    return DDPMAdapter(build_unet(cfg).to(dev), cfg), (1, 28, 28)


def _tiny_sd(dev: torch.device, width: float):
    from dataclasses import replace

    from sa_utils.adapters.sd import StableDiffusionAdapter
    from tinyworld.pipeline import TINY_SD, build_pipeline

    cfg = replace(TINY_SD, unet_channels=tuple(max(8, int(c * width)) for c in TINY_SD.unet_channels))
    adapter = StableDiffusionAdapter(build_pipeline(cfg, seed=0).to(dev), "full")
    size = adapter.model.config.sample_size
    return adapter, ("sd", 4, size, size, adapter.model.config.cross_attention_dim)


def make_batches(shape, n_steps: int, batch: int, dev: torch.device):
    g = torch.Generator().manual_seed(1)
    if shape[0] == "sd":  # latents and prompt embeddings (77 tokens)
        _, ch, h, w, dim = shape

        def one():
            return {
                "x": torch.randn(batch, ch, h, w, generator=g).to(dev),
                "c": torch.randn(batch, 77, dim, generator=g).to(dev),
            }

        return [one() for _ in range(n_steps)], [one() for _ in range(n_steps)]
    forget = [
        {"x": torch.rand(batch, *shape, generator=g).to(dev), "c": torch.zeros(batch, dtype=torch.long, device=dev)}
        for _ in range(n_steps)
    ]
    replay = [
        {"x": torch.rand(batch, *shape, generator=g).to(dev), "c": torch.randint(1, 10, (batch,), generator=g).to(dev)}
        for _ in range(n_steps)
    ]
    return forget, replay


def fisher_for(adapter) -> DiagonalFisher:
    return random_fisher(adapter.trainable_parameters())


def run_sa(adapter, forget, replay, fisher, steps: int, fused: bool = True) -> None:
    cfg = SAConfig(lmbda=10.0, gamma=1.0, steps=steps, lr=1e-4, checkpoint_every=0, log_every=10, fused=fused)
    selective_amnesia(adapter, lambda s: forget[s], lambda s: replay[s], fisher, cfg, progress=False)


def run_finetune(adapter, forget, replay, steps: int) -> None:
    finetune_steps(adapter, forget, replay, steps)


def step_times(model: str, steps: int, repeats: int, width: float = 1.0) -> dict:
    dev = device()
    adapter, shape = build(model, dev, width)
    forget, replay = make_batches(shape, steps, BATCH[model], dev)
    fisher = fisher_for(adapter)
    state = {k: v.clone() for k, v in adapter.model.state_dict().items()}

    def fresh(fn):
        def go():
            adapter.model.load_state_dict(state)
            fn()

        return go

    t = interleaved(
        {
            "finetune": fresh(lambda: run_finetune(adapter, forget, replay, steps)),
            "sa": fresh(lambda: run_sa(adapter, forget, replay, fisher, steps)),
        },
        repeats,
    )
    return {
        "model": model,
        "params": sum(p.numel() for p in adapter.model.parameters()),
        "batch": BATCH[model],
        "finetune_ms": 1e3 * t["finetune"] / steps,
        "sa_ms": 1e3 * t["sa"] / steps,
        "time_ratio": t["sa"] / t["finetune"],
    }


def optimizer_times(model: str, steps: int, repeats: int) -> dict:
    """Session 11's two speed switches of the SA step, on the same batches, interleaved:

    * ``before``: PyTorch's default (foreach) Adam and two passes, forget and replay (the step
      until session 11);
    * ``fused``: PyTorch's fused Adam kernel (``SAConfig(fused=True)``, the default), two passes;
    * ``both``: fused Adam and, where the adapter allows it (``joint_batches``), one pass on the
      forget and replay batches joined -- what ``selective_amnesia`` does now.

    Also how far each arm's weights end up from ``before`` after ``steps`` (rounding only)."""
    dev = device()
    adapter, shape = build(model, dev)
    forget, replay = make_batches(shape, steps, BATCH[model], dev)
    fisher = fisher_for(adapter)
    state = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    joinable = type(adapter).joint_batches
    weights = {}

    def arm(name, fused, joint):
        def go():
            adapter.model.load_state_dict(state)
            adapter.joint_batches = joint  # an instance attribute shadows the class's switch
            try:
                run_sa(adapter, forget, replay, fisher, steps, fused=fused)
            finally:
                del adapter.joint_batches
            weights[name] = [p.detach().clone() for p in adapter.model.parameters()]

        return go

    t = interleaved(
        {
            "before": arm("before", False, False),
            "fused": arm("fused", True, False),
            "both": arm("both", True, joinable),
        },
        repeats,
    )
    start = [state[k] for k, _ in adapter.model.named_parameters()]
    moved = max((a - s).abs().max().item() for a, s in zip(weights["before"], start))

    def apart(name):
        return max((a - b).abs().max().item() for a, b in zip(weights["before"], weights[name]))

    return {
        "model": model,
        "steps": steps,
        "batch": BATCH[model],
        "joint_batches": joinable,
        "before_ms": 1e3 * t["before"] / steps,
        "fused_ms": 1e3 * t["fused"] / steps,
        "both_ms": 1e3 * t["both"] / steps,
        "fused_speedup": t["before"] / t["fused"],
        "speedup": t["before"] / t["both"],
        "max_move": moved,
        "fused_apart": apart("fused"),
        "both_apart": apart("both"),
    }


def optimizer_table(rows: list[dict]):
    header = [
        "model",
        "batch",
        "before ms/step",
        "fused Adam ms/step",
        "fused + joined ms/step",
        "speed-up (fused)",
        "speed-up (both)",
        "largest weight change",
        "largest difference from before",
    ]
    return header, [
        [
            r["model"],
            r["batch"],
            f"{r['before_ms']:.1f}",
            f"{r['fused_ms']:.1f}",
            f"{r['both_ms']:.1f}" if r["joint_batches"] else "(not joined)",
            f"{r['fused_speedup']:.2f}x",
            f"{r['speedup']:.2f}x",
            f"{r['max_move']:.1e}",
            f"{max(r['fused_apart'], r['both_apart']):.1e}",
        ]
        for r in rows
    ]


def peak_memory(model: str, steps: int = 3, width: float = 1.0) -> dict:
    dev = device()
    out = {}
    for variant in ("finetune", "sa"):
        adapter, shape = build(model, dev, width)
        forget, replay = make_batches(shape, steps, BATCH[model], dev)
        fisher = fisher_for(adapter)
        params = list(adapter.model.parameters())
        with PeakTensorMemory(*params, *(fisher.values.values() if variant == "sa" else [])) as mem:
            if variant == "sa":
                run_sa(adapter, forget, replay, fisher, steps)
            else:
                run_finetune(adapter, forget, replay, steps)
        out[variant] = mem.peak
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    return {
        "finetune_mib": out["finetune"] / 2**20,
        "sa_mib": out["sa"] / 2**20,
        "memory_ratio": out["sa"] / out["finetune"],
        "memory_floor": (out["finetune"] + 2 * param_bytes) / out["finetune"],
    }


def run(models=MODELS, steps: int = 20, repeats: int = 5) -> list[dict]:
    rows = []
    for m in models:
        row = step_times(m, steps if m != "ddpm" else max(2, steps // 4), repeats)
        row.update(peak_memory(m))
        rows.append(row)
    return rows


def table_rows(rows: list[dict]):
    header = [
        "model (parameters)",
        "batch",
        "fine-tune ms/step",
        "SA ms/step",
        "time ratio (<= 1.2)",
        "fine-tune peak MiB",
        "SA peak MiB",
        "memory ratio (<= 1.3)",
        "EWC floor",
    ]
    out = []
    for r in rows:
        if r["memory_ratio"] <= 1.3:
            mem = "met"
        else:
            mem = "**missed**, at the floor" if r["memory_ratio"] <= r["memory_floor"] + 0.01 else "**missed**"
        time_status = "met" if r["time_ratio"] <= 1.2 else "**missed**"
        out.append(
            [
                f"{r['model']} ({r['params'] / 1e6:.2f}M)",
                r["batch"],
                f"{r['finetune_ms']:.1f}",
                f"{r['sa_ms']:.1f}",
                f"{r['time_ratio']:.2f}: {time_status}",
                f"{r['finetune_mib']:.1f}",
                f"{r['sa_mib']:.1f}",
                f"{r['memory_ratio']:.2f}: {mem}",
                f"{r['memory_floor']:.2f}",
            ]
        )
    return header, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=20, help="steps per timed run (the UNet runs a quarter as many)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--optimizers",
        action="store_true",
        help="time fused Adam and joined forget+replay batches against the step before them",
    )
    p.add_argument(
        "--store",
        action="store_true",
        help="with --optimizers: write benchmarks/results/sa_optimizers.json (Performance section 11)",
    )
    args = p.parse_args()
    if args.optimizers:
        rows = [
            optimizer_times(m, args.steps if m != "ddpm" else max(2, args.steps // 4), args.repeats)
            for m in args.models
            if m != "sd"
        ]
        print_table(f"SA step: fused Adam and joined batches vs before, {machine()}", *optimizer_table(rows))
        if args.store:
            out = Path(__file__).resolve().parent / "results" / "sa_optimizers.json"
            out.write_text(
                json.dumps(
                    {
                        "date": datetime.date.today().isoformat(),
                        "machine": machine(),
                        "steps": args.steps,
                        "repeats": args.repeats,
                        "rows": rows,
                    },
                    indent=2,
                )
                + "\n"
            )
            print(f"wrote {out}")
        return
    rows = run(args.models, args.steps, args.repeats)
    print_table(f"SA step vs fine-tuning step, {machine()}", *table_rows(rows))


if __name__ == "__main__":
    main()
