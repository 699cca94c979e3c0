"""The code every chapter opens with: pick the mode, set the style, say what will run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from sa_utils.chapter.plotting import set_style
from sa_utils.runtime import cache_dir, data_dir, default_device, resolve_mode


def setup(recipe: Callable[..., Any], mode: str | None = None, **overrides) -> Any:
    """Resolve quick/full mode, apply the book's figure style, and print the run settings.

    ``recipe`` is the part's recipe function (:func:`sa_utils.recipes.mnist_vae.recipe`,
    :func:`sa_utils.recipes.mnist_ddpm.recipe` or :func:`sa_utils.recipes.stable_diffusion.recipe`).
    ``mode=None`` means ``$SA_MODE`` if set, else quick on a CPU and, on a GPU, the part's
    default: full for Part I, quick for Parts II and III (:func:`sa_utils.runtime.resolve_mode`).
    """
    set_style()
    r = recipe(mode, **overrides)  # each part's recipe resolves the mode with its own GPU default
    print(f"mode: {r.mode} | device: {default_device()} | torch {torch.__version__}")
    if r.mode == "quick" and resolve_mode(mode) == "full":
        print(
            "quick mode although a GPU is here: this part's full mode runs only when asked for "
            '(MODE = "full" in the parameters cell, or SA_MODE=full)'
        )
    print(f"data: {data_dir()} | cache: {cache_dir()}")
    knobs = {k: v for k, v in asdict(r).items() if k != "mode"}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    return r


def table(header, rows):
    """A small HTML table for a notebook (pandas is not a dependency of the book)."""
    from IPython.display import HTML

    cell = "padding: 0.15em 0.7em; text-align: right"
    head = "".join(f"<th style='{cell}'>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{cell}'>{v}</td>" for v in row) + "</tr>" for row in rows)
    return HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


ABLATION_ARMS: dict[str, dict[str, float]] = {
    "surrogate only": {"lmbda": 0.0, "gamma": 0.0},
    "surrogate + EWC": {"gamma": 0.0},
    "surrogate + replay": {"lmbda": 0.0},
}
"""SA with its protecting terms switched off one at a time: the overrides of each ablation arm."""


def ablation_arms(
    chosen: list[str] | None, default: list[str], extra: dict[str, dict] | None = None
) -> dict[str, dict[str, Any]]:
    """The overrides of the ablation arms a chapter runs: ``chosen`` (its ``ABLATION`` parameter),
    or ``default`` when that is None, from :data:`ABLATION_ARMS` and the chapter's ``extra`` arms.
    An unknown name is refused before anything runs, with the names there are."""
    arms = {**ABLATION_ARMS, **(extra or {})}
    names = list(default if chosen is None else chosen)
    unknown = sorted(set(names) - set(arms))
    if unknown:
        raise ValueError(f"ABLATION: unknown arms {unknown}; choose from {list(arms)}")
    return {name: dict(arms[name]) for name in names}
