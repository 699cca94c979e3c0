"""UCE (sa_utils/erasure/uce.py): the closed form against an independent least-squares solve of the
paper's objective, what the edit does to the erased concept's keys and values, and the command."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from sa_utils.adapters.sd import StableDiffusionAdapter  # noqa: E402
from sa_utils.erasure.uce import UCEConfig, apply_uce, concept_embedding, edited_layers, uce_weights  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    from tinyworld.pipeline import build_pipeline

    return build_pipeline(seed=0)  # random weights, the real CLIP tokenizer


def _lstsq(adapter, config, w_old):
    """The paper's objective as one stacked least-squares problem ||W X - Y||^2, solved by lstsq."""
    emb = {c: concept_embedding(adapter, c) for c in {*config.erase, *config.guides, *config.preserve}}
    cols_x = [config.lamb**0.5 * torch.eye(w_old.shape[1], dtype=torch.float64)]
    cols_y = [config.lamb**0.5 * w_old]
    for c, g in zip(config.erase, config.guides):
        cols_x.append(config.erase_scale**0.5 * emb[c][:, None])
        cols_y.append(config.erase_scale**0.5 * (w_old @ emb[g])[:, None])
    for p in config.preserve:
        cols_x.append(config.preserve_scale**0.5 * emb[p][:, None])
        cols_y.append(config.preserve_scale**0.5 * (w_old @ emb[p])[:, None])
    x, y = torch.cat(cols_x, 1), torch.cat(cols_y, 1)  # W x = y in the least-squares sense: x^T W^T = y^T
    return torch.linalg.lstsq(x.T, y.T).solution.T


def test_the_closed_form_minimises_the_papers_objective(pipe):
    adapter = StableDiffusionAdapter(pipe, "full")
    config = UCEConfig(("spotted",), ("plain",), ("a red car", "a person at the beach"), erase_scale=2.0, lamb=0.3)
    new = uce_weights(adapter, config)
    layers = edited_layers(adapter.model)
    assert len(new) == len(layers) > 0 and all(n.rsplit(".", 1)[-1] in ("to_k", "to_v") for n in new)
    assert all(".attn2." in f".{n}." for n in new)
    for name, w in list(new.items())[:4]:
        expected = _lstsq(adapter, config, layers[name].weight.detach().double())
        torch.testing.assert_close(w.double(), expected, rtol=1e-4, atol=1e-6)


def test_a_small_lamb_maps_the_concept_onto_its_guide_and_keeps_the_preserved(pipe):
    from tinyworld.pipeline import build_pipeline

    p = build_pipeline(seed=0)
    adapter = StableDiffusionAdapter(p, "full")
    config = UCEConfig(("spotted",), ("plain",), ("a red car",), lamb=1e-4)
    emb = {c: concept_embedding(adapter, c).float() for c in ("spotted", "plain", "a red car")}
    before = {n: m.weight.detach().clone() for n, m in edited_layers(adapter.model).items()}
    change = apply_uce(adapter, config)
    assert all(v > 0 for v in change.values())
    for name, m in edited_layers(adapter.model).items():
        target = before[name] @ emb["plain"]
        assert (m.weight @ emb["spotted"] - target).norm() < 1e-2 * target.norm()  # erased -> guide
        kept = before[name] @ emb["a red car"]
        assert (m.weight @ emb["a red car"] - kept).norm() < 1e-2 * kept.norm()  # preserved stays


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="one guide concept per erased concept"):
        UCEConfig(("a", "b"), ("c",))
    with pytest.raises(ValueError, match="at least one non-empty concept"):
        UCEConfig(("  ",))
    with pytest.raises(ValueError, match="lamb must be >= 0"):
        UCEConfig(("a",), lamb=-1.0)
    with pytest.raises(ValueError, match="underdetermined"):
        UCEConfig(("a",), lamb=0.0)


def test_the_erase_command_writes_a_pipeline_plain_diffusers_loads(pipe, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    from sa_utils.sd.__main__ import main

    src = tmp_path / "tiny"
    pipe.save_pretrained(src, safe_serialization=True)
    argv = [
        "erase",
        "--method",
        "uce",
        "--pretrained_model_name_or_path",
        str(src),
        "--erase_concept",
        "spotted",
        "--guide_concept",
        "plain",
        "--output_dir",
        str(tmp_path / "uce"),
    ]
    assert main(argv) == 0
    edited = StableDiffusionPipeline.from_pretrained(tmp_path / "uce" / "pipeline", safety_checker=None)
    res = json.loads((tmp_path / "uce" / "results.json").read_text())
    assert res["method"] == "uce" and res["layers"] == len(edited_layers(edited.unet))
    name = next(iter(edited_layers(edited.unet)))
    assert not torch.equal(edited.unet.get_submodule(name).weight, pipe.unet.get_submodule(name).weight)
    assert main(argv) == 0  # a finished run folder is returned as it is
    capsys.readouterr()
    assert main([*argv[:-2], "--lamb", "0.1", "--output_dir", str(tmp_path / "uce")]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*argv, "--erase_concept", "dotted"]) == 2
    assert "one guide concept per erased concept" in capsys.readouterr().err
