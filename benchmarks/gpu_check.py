"""The one prepared GPU check: run it, once, when a GPU machine is lent (CONTRIBUTING.md, "When a GPU is lent").

    python benchmarks/gpu_check.py --out DIR [--wheels benchmarks/wheels] [--budget-s 450]
    python benchmarks/gpu_check.py --smoke --out DIR     # seconds on a CPU: tiny sizes, every code path (CI)
    python benchmarks/gpu_check.py --fetch-wheels benchmarks/wheels   # on a machine with a package registry

Three sections, each on the device it finds (CUDA if there is one), each timed, each written to
``DIR/gpu_check.json`` as soon as it is done (a section that fails records its error and the
others still run; a section that would start after ``--budget-s`` is skipped and says so):

1. **vae** -- Part I at the authors' SA settings (``mnist_vae.recipe("full")``: lambda 100, lr 1e-4,
   batch 256, a Fisher of 50,000 model samples) from the shipped quick-mode theta*, for
   ``--vae-steps`` steps; forgetting metrics on 1,000 samples per digit, read by the shipped
   quick-mode classifier (the machine has no MNIST, so no Frechet distance). Step time, Fisher time.
2. **ddpm** -- the authors' CIFAR-10 UNet (35.7M parameters, random weights): one SA step at their
   batch (128 surrogate + 128 replay, Adam, clip 1, EMA), its peak memory, and the exact Fisher's
   seconds per image (all 1,000 timesteps summed before squaring, the authors' estimator).
3. **sd** -- Stable Diffusion v1.4's real UNet, VAE and CLIP text encoder (random weights: 859.5M +
   83.7M + 123.1M parameters) at 512x512: SA steps with the full recipe's flags (AdamW, 4 micro-batches
   of 4 + 4, fp16 autocast, theta* and F in bfloat16, gradient checkpointing, EMA), for each
   ``train_method``; step time and ``torch.cuda.max_memory_allocated``; the exact Fisher's seconds per
   image, extrapolated from a stratified sum of ``--sd-fisher-k`` timesteps (its cost is linear in the
   timesteps); and which of 16 / 24 / 40 / 80 GB the measured peak fits with 10 % headroom.

The GPU machine has torch, transformers, accelerate, safetensors and matplotlib but no diffusers and
no package registry: ``--fetch-wheels`` downloads the diffusers wheel this project uses (and nothing
else) into a folder that travels with the working tree; ``--wheels`` installs from it with
``pip --no-index`` before the check imports anything of ``sa_utils`` (run from the repository root with
``PYTHONPATH=.``). The table goes to stdout; the JSON is what the Performance appendix is made from.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
GPU_SIZES_GB = (16, 24, 40, 80)
HEADROOM = 0.9  # a run that needs more than 90 % of a card's memory is counted as not fitting


def diffusers_spec() -> str:
    from importlib.metadata import version

    return f"diffusers=={version('diffusers')}"


def fetch_wheels(folder: Path) -> int:
    """Download the diffusers wheel of this environment's version and the wheels of its dependencies
    into ``folder`` (the GPU machine lacks diffusers, and ``requests``, which diffusers needs and
    transformers 5 no longer pulls in; at install time pip takes from the folder only what is missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "REQUIREMENT").write_text(diffusers_spec() + "\n")
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", str(folder), diffusers_spec()]
    print(" ".join(cmd))
    return subprocess.call(cmd)


def install_wheels(folder: Path) -> None:
    """Install what the GPU machine lacks from ``folder`` (offline), unless it is importable already."""
    if importlib.util.find_spec("diffusers") is not None:
        return
    if not (folder / "REQUIREMENT").exists():
        raise SystemExit(
            f"diffusers is not installed and {folder} holds no wheels: run "
            f"`python benchmarks/gpu_check.py --fetch-wheels {folder}` on a machine with a package registry "
            "and carry the folder with the working tree"
        )
    spec = (folder / "REQUIREMENT").read_text().strip()
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(folder), spec]
    print(" ".join(cmd), flush=True)
    subprocess.check_call(cmd)


# --------------------------------------------------------------------------- measuring
def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    """``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak`, in GiB (``None`` on a CPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None


def fits(peak: float | None) -> dict[str, bool] | None:
    return None if peak is None else {f"{g} GB": peak * GIB <= HEADROOM * g * 1e9 for g in GPU_SIZES_GB}


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def per_step_seconds(history_fn, steps: int) -> float:
    """Seconds per step of ``steps`` steps after one warm-up step (``history_fn(n)`` runs n steps)."""
    history_fn(1)
    seconds, _ = timed(lambda: history_fn(steps))
    return seconds / steps


# --------------------------------------------------------------------------- the three sections
def section_vae(args) -> dict:
    import torch

    from sa_utils.eval.metrics import evaluate_forgetting
    from sa_utils.recipes import mnist_vae

    quick, full = mnist_vae.recipe("quick"), mnist_vae.recipe("full")
    steps = 20 if args.smoke else args.vae_steps
    n_fisher = 512 if args.smoke else full.fisher_samples
    n_eval = 20 if args.smoke else 1000
    dev = device()
    base = mnist_vae.pretrained_cvae(quick, device=dev)  # theta*: the shipped quick-mode CVAE
    clf = mnist_vae.pretrained_classifier(quick, device=dev)
    fisher_s, fisher = timed(lambda: mnist_vae.mnist_fisher(base, full, n_samples=n_fisher, progress=False))
    reset_peak()
    sa_s, (student, result) = timed(
        lambda: mnist_vae.forget_digits(base, full, 0, fisher=fisher, steps=steps, progress=False)
    )
    peak = peak_gib()
    out = {
        "theta_star": "shipped quick-mode CVAE",
        "sa_steps": steps,
        "sa_batch": full.sa_batch,
        "lambda": full.lmbda,
        "lr": full.sa_lr,
        "fisher_samples": n_fisher,
        "fisher_s": fisher_s,
        "sa_s": sa_s,
        "sa_ms_per_step": 1000 * sa_s / steps,
        "peak_gib": peak,
    }
    with torch.no_grad():
        for name, model in (("pretrained", base), ("after SA", student)):
            m = evaluate_forgetting(model, clf, forget=[0], n_per_class=n_eval)
            out[name] = {k: m[k] for k in ("entropy_forget", "p_forget", "acc_remember")}
    out["evaluator"] = "shipped quick-mode classifier, no FD (no MNIST on the machine)"
    return out


def section_ddpm(args) -> dict:
    import torch

    from sa_utils.adapters.ddpm import DDPMAdapter
    from sa_utils.core.amnesia import selective_amnesia
    from sa_utils.core.fisher import TimestepSum, diagonal_fisher
    from sa_utils.models.unet import CIFAR_UNET, UNetConfig, build_unet
    from sa_utils.recipes import mnist_ddpm
    from sa_utils.recipes.sd_memory import random_fisher

    r = mnist_ddpm.recipe("full")
    cfg = (
        UNetConfig(sample_size=8, channels=3, block_out_channels=(8, 16), norm_num_groups=4)
        if args.smoke
        else CIFAR_UNET
    )
    batch = 4 if args.smoke else r.sa_batch
    steps = 2 if args.smoke else args.ddpm_steps
    dev = device()
    torch.manual_seed(0)
    adapter = DDPMAdapter(build_unet(cfg).to(dev), cfg)
    n_params = sum(p.numel() for p in adapter.model.parameters())
    fisher = random_fisher(adapter.trainable_parameters())
    g = torch.Generator().manual_seed(0)

    def one(_step):
        x = torch.rand(batch, cfg.channels, cfg.sample_size, cfg.sample_size, generator=g)
        return {"x": x.to(dev), "c": torch.randint(0, 10, (batch,), generator=g).to(dev)}

    forget, replay = [one(s) for s in range(steps + 1)], [one(s) for s in range(steps + 1)]
    sa_cfg = r.sa_config(checkpoint_every=0, log_every=10)

    def run(n):
        from dataclasses import replace

        return selective_amnesia(
            adapter, forget.__getitem__, replay.__getitem__, fisher, replace(sa_cfg, steps=n), progress=False
        )

    reset_peak()
    step_s = per_step_seconds(run, steps)
    peak = peak_gib()
    k = 4 if args.smoke else None  # None: all 1,000 timesteps, the authors' exact sum
    est = TimestepSum(k=k, chunk=4 if args.smoke else 125)
    n_img = 1 if args.smoke else args.ddpm_fisher_images
    x = one(0)
    sample = [{kk: v[:n_img] for kk, v in x.items()}]
    fisher_s, _ = timed(lambda: diagonal_fisher(adapter, sample, estimator=est, progress=False))
    return {
        "unet": "authors' CIFAR-10 layout" if not args.smoke else "smoke",
        "params": n_params,
        "batch": f"{batch} + {batch}",
        "sa_s_per_step": step_s,
        "peak_gib": peak,
        "fits": fits(peak),
        "fisher_timesteps": est.name,
        "fisher_s_per_image": fisher_s / n_img,
    }


def sd_pipeline(smoke: bool):
    """SD v1.4's components with random weights (no download), as the adapter needs them."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from sa_utils.models.sd_configs import (
        SD_BETAS,
        build_unet_from_config,
        sd14_text_encoder_config,
        sd14_unet_config,
        sd14_vae_config,
        sd_small_unet_config,
    )

    dev = device()
    torch.manual_seed(0)
    if smoke:
        unet = build_unet_from_config(sd_small_unet_config(width=8, cross_attention_dim=16, sample_size=8), dev)
        vae_cfg = {**sd14_vae_config(), "block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4, "sample_size": 64}
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=100,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=77,
            )
        )
    else:
        unet = build_unet_from_config(sd14_unet_config(), dev)
        vae_cfg = sd14_vae_config()
        text = CLIPTextModel(sd14_text_encoder_config())
    vae = AutoencoderKL(**vae_cfg)
    return SimpleNamespace(unet=unet, vae=vae.to(dev), text_encoder=text.to(dev), scheduler=DDPMScheduler(**SD_BETAS))


def section_sd(args) -> dict:
    from dataclasses import replace

    import torch

    from sa_utils.adapters.sd import StableDiffusionAdapter
    from sa_utils.core.amnesia import selective_amnesia
    from sa_utils.core.fisher import TimestepSum, diagonal_fisher
    from sa_utils.recipes import stable_diffusion
    from sa_utils.recipes.sd_memory import random_fisher

    r = stable_diffusion.recipe("full")
    dev = device()
    steps = 1 if args.smoke else args.sd_steps
    out = {
        "recipe": {
            k: getattr(r, k)
            for k in (
                "sa_batch",
                "grad_accum",
                "optimizer",
                "weight_decay",
                "mixed_precision",
                "ewc_dtype",
                "gradient_checkpointing",
                "ema_decay",
            )
        }
    }
    pipe = sd_pipeline(args.smoke)
    out["params"] = {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in ("unet", "vae", "text_encoder")}
    cfg = pipe.unet.config
    g = torch.Generator().manual_seed(0)

    def one():
        return {
            "x": torch.randn(r.sa_batch, 4, cfg.sample_size, cfg.sample_size, generator=g).to(dev),
            "c": torch.randn(r.sa_batch, 77, cfg.cross_attention_dim, generator=g).to(dev),
        }

    micro = (steps + 1) * r.grad_accum  # the routine draws one micro-batch per source per accumulation step
    forget, replay = [one() for _ in range(micro)], [one() for _ in range(micro)]
    if r.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    rows = {}
    methods = ("full",) if args.smoke else args.sd_train_methods
    for method in methods:
        adapter = StableDiffusionAdapter(pipe, method)
        fisher = random_fisher(adapter.trainable_parameters()).to(dev, getattr(torch, r.ewc_dtype))
        sa_cfg = r.sa_config(checkpoint_every=0, log_every=10)
        if dev.type != "cuda":
            sa_cfg = replace(sa_cfg, mixed_precision="no")  # fp16 autocast needs CUDA

        def run(n, adapter=adapter, fisher=fisher, sa_cfg=sa_cfg):
            return selective_amnesia(
                adapter, forget.__getitem__, replay.__getitem__, fisher, replace(sa_cfg, steps=n), progress=False
            )

        reset_peak()
        step_s = per_step_seconds(run, steps)
        peak = peak_gib()
        rows[method] = {
            "trained_params": sum(p.numel() for p in adapter.trainable_parameters().values()),
            "sa_s_per_step": step_s,
            "peak_gib": peak,
            "fits": fits(peak),
        }
        del adapter, fisher
    out["train_methods"] = rows
    adapter = StableDiffusionAdapter(pipe, "full")
    k = 2 if args.smoke else args.sd_fisher_k
    est = TimestepSum(k=k, chunk=min(k, 8))
    one_image = {kk: v[:1] for kk, v in one().items()}
    with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
        fisher_s, _ = timed(lambda: diagonal_fisher(adapter, [one_image], estimator=est, progress=False))
    out["fisher"] = {
        "timesteps_measured": k,
        "s_per_image_measured": fisher_s,
        "s_per_image_exact_extrapolated": fisher_s * 1000 / k,
        "note": "the exact sum runs all 1,000 timesteps; time is linear in the timesteps",
    }
    return out


SECTIONS = {"vae": section_vae, "ddpm": section_ddpm, "sd": section_sd}


def machine() -> dict:
    import torch

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    if torch.cuda.is_available():
        out["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GIB
    return out


def table(results: dict) -> str:
    lines = ["| section | what | value |", "|---|---|---|"]
    for name, res in results["sections"].items():
        for key, value in flatten(res):
            lines.append(f"| {name} | {key} | {value} |")
    return "\n".join(lines)


def flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", f"{v:.4g}" if isinstance(v, float) else v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for gpu_check.json (created)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device: every code path in seconds")
    p.add_argument("--wheels", type=Path, help="install missing packages (diffusers) from this folder, offline")
    p.add_argument("--fetch-wheels", type=Path, metavar="DIR", help="download the wheels to carry, then stop")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--budget-s", type=float, default=450.0, help="start no section after this many seconds")
    p.add_argument("--vae-steps", type=int, default=2_000, help="SA steps of the VAE section (the authors': 10,000)")
    p.add_argument("--ddpm-steps", type=int, default=5)
    p.add_argument("--ddpm-fisher-images", type=int, default=2)
    p.add_argument("--sd-steps", type=int, default=3)
    p.add_argument("--sd-train-methods", nargs="+", default=["full", "xattn"], choices=["full", "xattn", "noxattn"])
    p.add_argument("--sd-fisher-k", type=int, default=40, help="timesteps of the measured SD Fisher (of 1,000)")
    args = p.parse_args(argv)
    if args.fetch_wheels:
        return fetch_wheels(args.fetch_wheels)
    if args.out is None:
        p.error("--out is required (the folder gpu_check.json is written to)")
    if args.wheels:
        install_wheels(args.wheels)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import os

    os.environ.setdefault("SA_CACHE_DIR", str(args.out / "cache"))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": machine(),
        "budget_s": args.budget_s,
        "sections": {},
    }
    started = time.perf_counter()
    for name in args.sections:
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            results["sections"][name] = {"skipped": f"budget of {args.budget_s:.0f} s spent ({elapsed:.0f} s)"}
        else:
            print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
            try:
                seconds, res = timed(lambda name=name: SECTIONS[name](args))
                results["sections"][name] = {**res, "section_s": seconds}
            except Exception as err:  # one failing section must not lose the others' figures
                results["sections"][name] = {
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc()[-2000:],
                }
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["total_s"] = time.perf_counter() - started
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    return 1 if any("error" in s for s in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
