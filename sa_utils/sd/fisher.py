"""Step 3: the diagonal Fisher of a Stable Diffusion UNet over the replay set, sharded and resumable.

The replay set is cut into chunks of ``chunk_size`` images; chunk ``k`` is handled by
process ``k mod world_size`` (``accelerate launch --num_processes N`` splits the work; one
process does it all without accelerate). For chunk ``k`` the VAE posterior draw, the
timesteps and the noise all come from generators seeded by ``(seed, k)``, so every chunk's
squared gradients are the same whichever process computes them. Each process keeps a
running sum of per-sample squared gradients and saves it every ``checkpointing_steps``
chunks (``partial-rank{r}-of{N}.safetensors``, with the chunks done); a rerun continues from
there. When all are done, the main process adds the partial sums and writes
``fisher.safetensors`` (a :class:`sa_utils.core.fisher.DiagonalFisher`). The result equals the
one-process result up to the order of float additions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sa_utils.core.fisher import (
    SINGLE,
    DiagonalFisher,
    FisherSum,
    TimestepSum,
    sq_grad_sum_loop,
    sq_grad_sum_timestep_loop,
    sq_grad_sum_timesteps,
    sq_grad_sum_vmap,
)
from sa_utils.progress import progress_bar
from sa_utils.runtime import step_generator
from sa_utils.sd.common import claim_run_folder
from sa_utils.sd.imagesets import load_image_set
from sa_utils.storage.checkpoint import load_tensors, save_tensors

STEP = "fisher"
FISHER_FILE = "fisher.safetensors"


class _SingleProcess:
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self) -> None:
        pass


def _chunk_len(n_images: int, k: int, chunk_size: int) -> int:
    """Images in chunk ``k`` of a set of ``n_images``."""
    return max(0, min(n_images, (k + 1) * chunk_size) - k * chunk_size)


def chunk_batch(
    adapter, images: torch.Tensor, prompts: list[str], k: int, chunk_size: int, seed: int, with_noise: bool = True
) -> dict:
    """Latents and prompt embeddings of chunk ``k`` plus (``with_noise``) its one-draw loss noise,
    all seeded by ``(seed, k)``."""
    lo, hi = k * chunk_size, min(len(images), (k + 1) * chunk_size)
    dev = adapter.device
    z = adapter.encode_images(images[lo:hi].to(dev), step_generator(seed, 2 * k, device=dev))
    c = adapter.encode_prompts(prompts[lo:hi])
    batch = {"x": z, "c": c}
    return adapter.draw_noise(batch, step_generator(seed, 2 * k + 1)) if with_noise else batch


def _sums(
    adapter, batch: dict, method: str, chunk_size: int, estimator: TimestepSum | None, first: int, seed: int
) -> dict[str, torch.Tensor]:
    """Per-sample squared gradients of one chunk; with ``estimator``, image ``first + b`` draws its
    timesteps and noise from its own generator, so any sharding gives the same numbers."""
    if estimator is None:
        return sq_grad_sum_loop(adapter, batch) if method == "loop" else sq_grad_sum_vmap(adapter, batch, chunk_size)
    gens = [step_generator(seed + 7919, first + b) for b in range(len(batch["x"]))]
    fn = sq_grad_sum_timestep_loop if method == "loop" else sq_grad_sum_timesteps
    return fn(adapter, batch, estimator, gens)


def sd_fisher(
    adapter,
    replay_dir: str | Path,
    output_dir: str | Path,
    chunk_size: int = 4,
    method: str = "vmap",
    seed: int = 0,
    checkpointing_steps: int = 50,
    state=None,
    progress: bool = True,
    max_chunks: int | None = None,
    estimator: TimestepSum | None = TimestepSum(),
) -> DiagonalFisher | None:
    """Compute (or finish) the Fisher; returns it on the main process, ``None`` on the others.

    ``estimator``: the authors' exact timestep sum by default (``TimestepSum()``: per image, the
    gradient of the loss summed over all T timesteps, squared); ``TimestepSum(k=K)`` is the
    stratified estimate; ``None`` squares one (t, eps) draw per image (not the authors' Fisher).
    ``method``: with an estimator, ``"vmap"`` means the batched timestep sum and ``"loop"`` the
    authors' one-timestep-per-pass reference.

    ``max_chunks`` stops this call after that many new chunks (e.g. a time-limited session),
    saving the partial sums; it then returns ``None`` and a later call continues.
    """
    if method not in ("vmap", "loop"):
        raise ValueError(
            f"method must be 'vmap' (per-sample gradients in one vectorised pass) or 'loop', got {method!r}"
        )
    state = state or _SingleProcess()
    rank, world = state.process_index, state.num_processes
    images, prompts, set_settings = load_image_set(replay_dir)
    n_chunks = (len(images) + chunk_size - 1) // chunk_size
    est_name = estimator.name if estimator is not None else SINGLE
    settings = {
        "replay_set": str(Path(replay_dir).resolve()),
        "n_images": len(images),
        "chunk_size": chunk_size,
        "seed": seed,
        "model_config": adapter.config(),
        "estimator": est_name,
    }
    folder = Path(output_dir)
    if state.is_main_process:
        claim_run_folder(folder, settings, STEP)
    state.wait_for_everyone()
    claim_run_folder(folder, settings, STEP)  # every process checks (and fails) alike
    final = folder / FISHER_FILE
    if final.exists():
        return DiagonalFisher.load(final, adapter.trainable_parameters()) if state.is_main_process else None

    params = adapter.trainable_parameters()
    partial = folder / f"partial-rank{rank}-of{world}.safetensors"
    mine = list(range(rank, n_chunks, world))
    done: list[int] = []
    if partial.exists():
        sums, meta = load_tensors(partial, device=adapter.device)
        done = list(meta["chunks_done"])
        acc = FisherSum.of(sums, sum(_chunk_len(len(images), k, chunk_size) for k in done))
    else:
        acc = FisherSum(params)
    was_training = adapter.model.training
    adapter.model.eval()
    bar = progress_bar(
        total=len(mine), initial=len(done), desc=f"Fisher (rank {rank}/{world})", unit="chunk", disable=not progress
    )
    new = 0
    try:
        for k in mine:
            if k in done:
                continue
            if max_chunks is not None and new >= max_chunks:
                break
            new += 1
            batch = chunk_batch(adapter, images, prompts, k, chunk_size, seed, with_noise=estimator is None)
            acc.add(_sums(adapter, batch, method, chunk_size, estimator, k * chunk_size, seed), len(batch["x"]))
            done.append(k)
            bar.update(1)
            if len(done) % checkpointing_steps == 0 or len(done) == len(mine):
                save_tensors(partial, acc.sums, {"chunks_done": done, "rank": rank, "world": world})
    finally:
        bar.close()
        adapter.model.train(was_training)
    if not mine:
        save_tensors(partial, acc.sums, {"chunks_done": [], "rank": rank, "world": world})
    if len(done) < len(mine):  # stopped early by max_chunks
        save_tensors(partial, acc.sums, {"chunks_done": done, "rank": rank, "world": world})
        return None
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    total = FisherSum.of({}, 0)
    for r in range(world):
        part, meta = load_tensors(folder / f"partial-rank{r}-of{world}.safetensors")
        expected = list(range(r, n_chunks, world))
        if sorted(meta["chunks_done"]) != expected:
            raise RuntimeError(
                f"rank {r} of {world} finished chunks {sorted(meta['chunks_done'])[:5]}..., expected "
                f"{len(expected)} chunks; rerun the same command to finish"
            )
        total.merge(FisherSum.of(part, sum(_chunk_len(len(images), k, chunk_size) for k in expected)))
    if total.count != len(images):
        raise RuntimeError(f"the partial Fisher sums hold {total.count} images, the replay set {len(images)}")
    fisher = total.fisher(
        {
            "method": method,
            "seed": seed,
            "model_config": adapter.config(),
            "replay_set": settings["replay_set"],
            "processes": world,
            "estimator": est_name,
        },
        overflow="the UNet's loss overflowed on the replay set (try --mixed_precision no)",
    )
    fisher.save(final)
    return fisher
