"""Importing the SA authors' Stable Diffusion Fisher (a pickle) into a project Fisher file, safely.

The authors' file is ``pickle.dump`` of ``{CompVis UNet name: tensor}``. Here such files are
made for small SD-shaped UNets: each diffusers parameter gets a distinct marker tensor, stored
under the CompVis name written out independently below (the inverse of the renaming the
import relies on), so the test sees every value land on its own parameter. Nothing is
downloaded; the command line runs on a tiny pipeline saved to a folder.
"""

from __future__ import annotations

import collections
import datetime
import io
import os
import pickle
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from sa_utils.core.fisher import DiagonalFisher
from sa_utils.sd.__main__ import main as sd_main
from sa_utils.sd.import_fisher import (
    CONVERTER,
    FisherImportError,
    UnsafePickleError,
    import_authors_fisher,
    restricted_load,
)

# ------------------------------------------------------------------ the authors' names, written out
_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _resnet(rest: list[str]) -> str:
    return ".".join([_RESNET[rest[0]], *rest[1:]])


def compvis_name(name: str, unet) -> str:
    """The name CompVis's ``UNetModel`` (SD v1.x) gives the diffusers parameter ``name``."""
    per = unet.config.layers_per_block + 1  # CompVis blocks per level: the layers, then the down/up sampler
    for ours, theirs in _TOP.items():
        if name.startswith(ours + "."):
            return theirs + name[len(ours) :]
    p = name.split(".")
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks.{(b + 1) * per}.0.op.{p[-1]}"
        i = 1 + b * per + int(p[3])
        return f"input_blocks.{i}.0.{_resnet(p[4:])}" if p[2] == "resnets" else f"input_blocks.{i}.1." + ".".join(p[4:])
    if p[0] == "mid_block":
        if p[1] == "resnets":
            return f"middle_block.{2 * int(p[2])}.{_resnet(p[3:])}"
        return "middle_block.1." + ".".join(p[3:])
    if p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "upsamplers":  # after the attention when the level has one
            slot = 2 if hasattr(unet.up_blocks[b], "attentions") else 1
            return f"output_blocks.{b * per + per - 1}.{slot}.conv.{p[-1]}"
        i = b * per + int(p[3])
        return (
            f"output_blocks.{i}.0.{_resnet(p[4:])}" if p[2] == "resnets" else f"output_blocks.{i}.1." + ".".join(p[4:])
        )
    raise AssertionError(f"no CompVis name for {name}")


def markers(unet) -> dict[str, torch.Tensor]:
    """A distinct, non-negative value for every entry of every parameter (diffusers names)."""
    out = {}
    for i, (name, p) in enumerate(unet.named_parameters()):
        out[name] = i + torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) / max(p.numel(), 1)
    return out


def authors_dict(unet, prefix: str = "diffusion_model.") -> dict[str, torch.Tensor]:
    """What the authors' ``save_fim`` writes for ``unet``: CompVis names under ``LatentDiffusion.model``."""
    return {prefix + compvis_name(n, unet): v for n, v in markers(unet).items()}


def write_pickle(obj, path: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def unet():
    """SD v1.4's UNet layout (4 levels, cross-attention on 3, 2 layers per block) at 8 channels."""
    from sa_utils.models.sd_configs import build_unet_from_config, sd_small_unet_config

    torch.manual_seed(0)
    return build_unet_from_config(sd_small_unet_config(width=8, cross_attention_dim=16, sample_size=8))


# ------------------------------------------------------------------ safe loading
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_load_reads_dicts_of_tensors_under_every_protocol(protocol):
    d = {
        "w": torch.arange(6.0).reshape(2, 3).t(),
        "h": torch.ones(3, dtype=torch.float16),
        "p": torch.nn.Parameter(torch.rand(2, 2)),
        "g": torch.ones(2, requires_grad=True),
        "s": torch.tensor(2.5),
    }
    for obj in (d, collections.OrderedDict(d)):
        got = restricted_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
        assert list(got) == list(d)
        for k, v in d.items():
            assert type(got[k]) is torch.Tensor and not got[k].requires_grad and got[k].dtype == v.dtype
            assert torch.equal(got[k], v.detach())


def test_cuda_tensors_load_on_the_cpu(monkeypatch, tmp_path):
    import torch.serialization as ser

    tag = ser.location_tag
    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")  # pickled as a CUDA tensor is
    path = write_pickle({"w": torch.arange(4.0)}, tmp_path / "cuda.pkl")
    monkeypatch.setattr(ser, "location_tag", tag)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            pickle.loads(path.read_bytes())  # what plain pickle.load does with it on this machine
    got = restricted_load(path)
    assert got["w"].device.type == "cpu" and torch.equal(got["w"], torch.arange(4.0))


class _Call:
    """Pickles as a call of ``fn(*args)``, the way a malicious file runs code on pickle.load."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _pwned() -> Path:
    return Path(f"/tmp/pwned-{uuid.uuid4().hex}")


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(kind, unet, tmp_path):
    marker = _pwned()
    fn, args, name = {
        "os.system": (os.system, (f"touch {marker}",), f"{os.system.__module__}.system"),
        "eval": (eval, (f"open({str(marker)!r}, 'w').close()",), "builtins.eval"),
        "subprocess": (subprocess.call, (["touch", str(marker)],), "subprocess.call"),
    }[kind]
    fisher = authors_dict(unet)
    fisher[next(iter(fisher))] = _Call(fn, *args)  # one poisoned entry in an otherwise valid Fisher
    path = write_pickle(fisher, tmp_path / "evil.pkl")
    out = tmp_path / "out" / "fisher.safetensors"
    with pytest.raises(UnsafePickleError, match=f"'{name}'") as err:
        import_authors_fisher(path, unet, out)
    assert "not a plain dict of tensors" in str(err.value)
    assert isinstance(err.value, pickle.UnpicklingError)
    assert not marker.exists(), "the file's code ran"
    assert not out.exists() and not out.parent.exists()


def test_code_hidden_in_tensor_storage_bytes_is_refused(tmp_path):
    # torch's own _load_from_bytes would torch.load these bytes with weights_only=False and run them
    marker = _pwned()
    inner = pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=2)
    path = write_pickle({"w": _Call(torch.storage._load_from_bytes, inner)}, tmp_path / "evil-storage.pkl")
    with pytest.raises(UnsafePickleError, match="storage bytes are not plain tensor data"):
        restricted_load(path)
    assert not marker.exists()


def test_an_unknown_global_is_refused_by_name(tmp_path):
    path = write_pickle({"w": torch.ones(2), "when": datetime.date(2023, 1, 1)}, tmp_path / "date.pkl")
    with pytest.raises(UnsafePickleError, match=r"'datetime\.date'.*not a plain dict of tensors"):
        restricted_load(path)
    with pytest.raises(UnsafePickleError, match="'collections.Counter'"):
        restricted_load(io.BytesIO(pickle.dumps({"c": collections.Counter("ab")})))


@pytest.mark.parametrize(
    "obj, match",
    [
        ([torch.ones(2)], "holds a list, not a dict"),
        ({"a": {"b": torch.ones(2)}}, "nested container"),
        ({"a": [torch.ones(2)]}, "nested container"),
        ({"a": 3.0}, "a float, not a tensor"),
        ({1: torch.ones(2)}, "parameter names are strings"),
    ],
)
def test_anything_but_one_flat_dict_of_tensors_is_refused(obj, match):
    with pytest.raises(FisherImportError, match=match):
        restricted_load(io.BytesIO(pickle.dumps(obj)))


# ------------------------------------------------------------------ renaming and checks
@pytest.mark.parametrize("prefix", ["diffusion_model.", "model.diffusion_model."])
def test_every_value_lands_on_its_diffusers_parameter(prefix, unet, tmp_path):
    path = write_pickle(authors_dict(unet, prefix), tmp_path / "full_fisher_dict.pkl")
    out = tmp_path / "imported" / "fisher.safetensors"
    fisher = import_authors_fisher(path, unet, out, n_samples=4999)
    want = markers(unet)
    assert set(fisher.values) == set(want)
    for name, v in want.items():
        assert torch.equal(fisher.values[name], v), name

    back = DiagonalFisher.load(out, unet)  # as the forget step loads it: names and shapes of the UNet
    assert back.n_samples == 4999
    for name, v in want.items():
        assert back.values[name].dtype == torch.float32 and back.values[name].device.type == "cpu"
        assert torch.equal(back.values[name], v), name
    meta = back.metadata
    assert meta["estimator"] == "timestep-sum"
    assert meta["source"] == "authors' fisher_dict.pkl (clear-nus/selective-amnesia)"
    assert meta["converted_with"].startswith(CONVERTER)
    assert meta["model_config"]["unet"]["block_out_channels"] == [8, 16, 32, 32]


def test_sd14_sized_unet_maps_completely():
    # SD v1.4's real shapes on the meta device (no memory): all 686 UNet tensors, and a few names
    # as they appear in sd-v1-4.ckpt
    from sa_utils.models.sd_configs import build_unet_from_config, sd14_unet_config
    from sa_utils.sd.import_fisher import check_against_unet, convert_keys

    big = build_unet_from_config(sd14_unet_config(), device="meta")
    fisher = {
        f"diffusion_model.{compvis_name(n, big)}": torch.empty(p.shape, device="meta")
        for n, p in big.named_parameters()
    }
    converted, unused = convert_keys(fisher, big.config)
    values = check_against_unet(converted, big, unused)
    assert len(values) == len(fisher) == 686 and not unused
    known = {
        "input_blocks.3.0.op.weight": ("down_blocks.0.downsamplers.0.conv.weight", (320, 320, 3, 3)),
        "input_blocks.1.1.proj_in.weight": ("down_blocks.0.attentions.0.proj_in.weight", (320, 320, 1, 1)),
        "output_blocks.2.1.conv.weight": ("up_blocks.0.upsamplers.0.conv.weight", (1280, 1280, 3, 3)),
        "output_blocks.5.2.conv.weight": ("up_blocks.1.upsamplers.0.conv.weight", (1280, 1280, 3, 3)),
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            (1280, 768),
        ),
        "time_embed.0.weight": ("time_embedding.linear_1.weight", (1280, 320)),
    }
    for theirs, (ours, shape) in known.items():  # the names written out above agree with the real checkpoint's
        assert compvis_name(ours, big) == theirs and tuple(values[ours].shape) == shape, ours


def test_half_precision_values_come_out_float32(unet, tmp_path):
    fisher = {k: v.half() for k, v in authors_dict(unet).items()}
    got = import_authors_fisher(write_pickle(fisher, tmp_path / "f16.pkl"), unet, tmp_path / "f.safetensors")
    assert all(v.dtype == torch.float32 for v in got.values.values())


def test_linear_projections_take_a_1x1_convolution_fisher(unet, tmp_path):
    # the same UNet with proj_in / proj_out as linear layers: [C, C, 1, 1] values fit [C, C] entry for entry
    from sa_utils.models.sd_configs import build_unet_from_config, sd_small_unet_config

    linear = build_unet_from_config(
        {**sd_small_unet_config(width=8, cross_attention_dim=16, sample_size=8), "use_linear_projection": True}
    )
    path = write_pickle(authors_dict(unet), tmp_path / "conv.pkl")
    got = import_authors_fisher(path, linear, tmp_path / "linear.safetensors").values
    name = "down_blocks.0.attentions.0.proj_in.weight"
    assert got[name].shape == (8, 8) and dict(unet.named_parameters())[name].shape == (8, 8, 1, 1)
    for n, v in markers(unet).items():
        assert torch.equal(got[n], v.reshape(got[n].shape)), n


def test_a_fisher_of_another_unet_names_the_missing_and_unexpected_keys(unet, tmp_path):
    fisher = authors_dict(unet)
    del fisher["diffusion_model.input_blocks.1.1.proj_in.weight"]
    del fisher["diffusion_model.out.2.bias"]
    fisher["diffusion_model.label_emb.9.weight"] = torch.ones(3)
    fisher["first_stage_model.encoder.conv_in.weight"] = torch.ones(3)
    fisher["diffusion_model.time_embed.0.bias"] = torch.ones(5)
    out = tmp_path / "out" / "fisher.safetensors"
    with pytest.raises(FisherImportError) as err:
        import_authors_fisher(write_pickle(fisher, tmp_path / "other.pkl"), unet, out)
    msg = str(err.value)
    assert "missing: 2 UNet parameters" in msg
    assert "down_blocks.0.attentions.0.proj_in.weight" in msg and "conv_out.bias" in msg
    assert "unexpected: 2 Fisher entries" in msg
    assert "diffusion_model.label_emb.9.weight" in msg and "first_stage_model.encoder.conv_in.weight" in msg
    assert "time_embedding.linear_1.bias: Fisher (5,) vs UNet (32,)" in msg
    assert not out.exists()


def test_negative_values_are_not_a_fisher(unet, tmp_path):
    fisher = authors_dict(unet)
    fisher["diffusion_model.out.2.bias"] = -fisher["diffusion_model.out.2.bias"] - 1
    with pytest.raises(FisherImportError, match="conv_out.bias has negative"):
        import_authors_fisher(write_pickle(fisher, tmp_path / "neg.pkl"), unet, tmp_path / "f.safetensors")


# ------------------------------------------------------------------ the command
def test_the_import_fisher_command_on_a_saved_pipeline(tmp_path, capsys):
    from tinyworld.pipeline import build_pipeline

    folder = tmp_path / "pipeline"
    build_pipeline(seed=0).save_pretrained(folder, safe_serialization=True)
    unet = build_pipeline(seed=0).unet
    pkl = write_pickle(authors_dict(unet), tmp_path / "full_fisher_dict.pkl")
    args = ["import-fisher", "--fisher_pkl", str(pkl), "--pretrained_model_name_or_path", str(folder)]

    assert sd_main([*args, "--output_dir", str(tmp_path / "run")]) == 0
    final = tmp_path / "run" / "fisher.safetensors"
    fisher = DiagonalFisher.load(final, unet)
    for name, v in markers(unet).items():
        assert torch.equal(fisher.values[name], v), name
    assert fisher.n_samples == 5000 and fisher.metadata["estimator"] == "timestep-sum"
    assert fisher.metadata["model_config"]["model"] == "StableDiffusion-UNet2DConditionModel"
    assert sd_main([*args, "--output_dir", str(tmp_path / "run")]) == 0  # done already: nothing redone
    assert "already imported" in capsys.readouterr().out

    marker = _pwned()
    evil = write_pickle({"x": _Call(os.system, f"touch {marker}")}, tmp_path / "evil.pkl")
    assert (
        sd_main(
            [
                "import-fisher",
                "--fisher_pkl",
                str(evil),
                "--pretrained_model_name_or_path",
                str(folder),
                "--output_dir",
                str(tmp_path / "evil-run"),
            ]
        )
        == 2
    )
    assert re.search(f"refused to unpickle.*'{os.system.__module__}.system'", capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "evil-run").exists()
