"""Which mode a chapter runs in when nobody says: Part I goes full on a GPU, Parts II and III
stay quick until full mode is asked for (issue 14: their full modes take hours and Hub weights)."""

from __future__ import annotations

import pytest
import torch

from sa_utils.recipes import mnist_ddpm, mnist_vae, stable_diffusion
from sa_utils.runtime import resolve_mode


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.delenv("SA_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_on_a_gpu_part_one_defaults_to_full_and_parts_two_and_three_to_quick(gpu):
    assert mnist_vae.recipe().mode == "full"
    assert mnist_ddpm.recipe().mode == "quick"
    assert stable_diffusion.recipe().mode == "quick"


def test_full_mode_asked_for_is_full_everywhere(gpu, monkeypatch):
    assert mnist_ddpm.recipe("full").mode == "full" and stable_diffusion.recipe("full").mode == "full"
    monkeypatch.setenv("SA_MODE", "full")
    assert mnist_ddpm.recipe().mode == "full" and stable_diffusion.recipe().mode == "full"


def test_on_a_cpu_every_part_defaults_to_quick(monkeypatch):
    monkeypatch.delenv("SA_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert {mnist_vae.recipe().mode, mnist_ddpm.recipe().mode, stable_diffusion.recipe().mode} == {"quick"}


def test_bad_modes_are_named(monkeypatch):
    with pytest.raises(ValueError, match="gpu_default must be one of"):
        resolve_mode(None, gpu_default="fast")
    monkeypatch.setenv("SA_MODE", "huge")
    with pytest.raises(ValueError, match="'huge'"):
        resolve_mode()


def test_setup_says_why_a_gpu_run_is_quick(gpu, capsys):
    from sa_utils import chapter

    r = chapter.setup(mnist_ddpm.recipe, None)
    assert r.mode == "quick" and "only when asked for" in capsys.readouterr().out
    chapter.setup(mnist_vae.recipe, None)  # Part I: full on a GPU, no such line
    assert "only when asked for" not in capsys.readouterr().out


def test_ablation_arms_default_choice_extra_arms_and_unknown_names():
    import pytest

    from sa_utils import chapter

    assert chapter.ablation_arms(None, ["surrogate only"]) == {"surrogate only": {"lmbda": 0.0, "gamma": 0.0}}
    arms = chapter.ablation_arms(["surrogate + replay", "mine"], [], extra={"mine": {"lmbda": 50.0}})
    assert arms == {"surrogate + replay": {"lmbda": 0.0}, "mine": {"lmbda": 50.0}}
    arms["mine"]["lmbda"] = 1.0  # a copy: the shared table is unchanged
    assert chapter.ablation_arms(["mine"], [], extra={"mine": {"lmbda": 50.0}})["mine"] == {"lmbda": 50.0}
    assert chapter.ablation_arms([], ["surrogate only"]) == {}
    with pytest.raises(ValueError, match=r"unknown arms \['EWC only'\]; choose from \['surrogate only'"):
        chapter.ablation_arms(["EWC only"], [])
