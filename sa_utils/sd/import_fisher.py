"""Bring the SA authors' released Stable Diffusion Fisher into this project's format.

The authors (github clear-nus/selective-amnesia, ``sd/ldm/models/diffusion/ddpm_fim.py``)
keep their SD v1.4 Fisher as ``full_fisher_dict.pkl``: ``pickle.dump`` of a plain dict that
maps each name of ``LatentDiffusion.model.named_parameters()`` -- the CompVis UNet inside
their ``DiffusionWrapper``, so ``diffusion_model.input_blocks.0.0.weight`` and so on -- to a
tensor of that weight's shape (already divided by the number of samples; see
``sd/combine_fisher_dict.py``, which adds the per-GPU files).

Three steps turn it into a :class:`sa_utils.core.fisher.DiagonalFisher` keyed by the names of a
diffusers ``UNet2DConditionModel``:

1. :func:`restricted_load` unpickles it **without running anything a file asks for**. A
   pickle is a program: ``pickle.load`` calls whatever global it names (``os.system`` is one
   line away). Our unpickler resolves only the handful of globals a pickled dict of tensors
   needs (:data:`ALLOWED_GLOBALS`), each to a function of ours that checks its arguments;
   tensor bytes are read with ``torch.load(..., weights_only=True)`` onto the CPU (the file
   may hold CUDA tensors). Any other global stops the load with :class:`UnsafePickleError`.
2. :func:`convert_keys` renames with diffusers' own converter for original SD checkpoints,
   ``diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint`` (what
   ``UNet2DConditionModel.from_single_file`` uses). A diagonal Fisher has its weight's
   shape, so renaming it like a state dict is exact. The converter only renames (it
   reshapes nothing for the UNet); the one reshape allowed here is ``[o, i, 1, 1]`` <->
   ``[o, i]`` (a 1x1 convolution stored as a linear layer, or back), which keeps every
   entry in place.
3. :func:`check_against_unet` requires the result to cover exactly the UNet's parameters
   with their shapes, naming the missing, unexpected and mis-shaped ones otherwise.

:func:`import_authors_fisher` does all three and writes the Fisher file;
``python -m sa_utils.sd import-fisher`` is its command line.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from sa_utils.storage.shipped import sha256

CONVERTER = "diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint"
"""The diffusers function that renames CompVis UNet keys to ``UNet2DConditionModel`` keys."""
ESTIMATOR = "timestep-sum"
"""The authors' estimator: per sample, the gradient of the loss summed over all T timesteps, squared."""
SOURCE = "authors' fisher_dict.pkl (clear-nus/selective-amnesia)"
LDM_PREFIX = "model.diffusion_model."
"""Prefix of the UNet's weights in an original SD checkpoint (what the converter looks for)."""
AUTHORS_PREFIX = "diffusion_model."
"""Prefix in the authors' Fisher: the names under ``LatentDiffusion.model`` (the ``DiffusionWrapper``)."""
DEFAULT_N_SAMPLES = 5000
"""Images the authors' SD Fisher averages over (their ``fim_prompts.txt``, one image per prompt)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something a plain dict of tensors never needs; it was not loaded."""


class FisherImportError(ValueError):
    """The file loaded safely but is not a Fisher of this UNet (structure, names or shapes)."""


# --------------------------------------------------------------------------- safe unpickling
def _storage_from_bytes(data: Any) -> Any:
    """Stands in for ``torch.storage._load_from_bytes`` (which calls ``torch.load(weights_only=False)``)."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"tensor storage must be given as bytes, got {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as err:  # torch's weights-only loader refused it, or the bytes are garbage
        raise UnsafePickleError(
            f"a tensor's storage bytes are not plain tensor data ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"a tensor's storage bytes decode to {type(storage).__name__}, not a tensor storage")
    return storage


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """Stands in for ``torch._utils._rebuild_tensor_v2``, after checking every argument."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"a tensor is rebuilt from a {type(storage).__name__}, not from a storage")
    if not (
        isinstance(storage_offset, int)
        and _is_int_tuple(size)
        and _is_int_tuple(stride)
        and isinstance(requires_grad, bool)
    ):
        raise UnsafePickleError("a tensor's offset, size, stride or requires_grad is not of the expected type")
    if backward_hooks:
        raise UnsafePickleError("a tensor comes with backward hooks; a Fisher file has none")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, bool) for k, v in metadata.items())
    ):
        raise UnsafePickleError("a tensor's metadata is not a dict of flags")
    from torch._utils import _rebuild_tensor_v2

    return _rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict(), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """Stands in for ``torch._utils._rebuild_parameter``: an ``nn.Parameter`` comes back as its plain tensor."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise UnsafePickleError("a parameter is rebuilt from something other than a plain tensor")
    return data


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """Stands in for ``_codecs.encode``: how pickle protocols 0-2 store bytes (``encode(str, 'latin1')``)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError("_codecs.encode is allowed only as pickle uses it for bytes (a str, 'latin1')")
    return text.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
}
"""Every global a pickled dict / OrderedDict of tensors (or parameters) asks for, with what it resolves
to here. Found by unpickling such objects under every protocol 0-5 and recording ``find_class``."""


class _TensorDictUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], where: str):
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"refused to unpickle {self._where}: it asks for the global '{module}.{name}', which a plain dict of "
                f"tensors never needs (only {allowed}). The file is not a plain dict of tensors like the authors' "
                "fisher_dict.pkl, so nothing in it was run; do not open it with pickle.load or "
                "torch.load(weights_only=False)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refused to unpickle {self._where}: it uses persistent ids (a torch.save archive or "
            "another format), not a plain pickle.dump of a dict of tensors"
        )


def restricted_load(path_or_file: str | Path | IO[bytes]) -> dict[str, torch.Tensor]:
    """Unpickle a plain ``{name: tensor}`` dict (dict or OrderedDict) without running the file's code.

    Only :data:`ALLOWED_GLOBALS` resolve; anything else raises :class:`UnsafePickleError` naming
    it. Tensors land on the CPU whatever device they were saved from. Anything but one
    top-level dict of str -> tensor (a list, nested dicts, other values) raises
    :class:`FisherImportError`.
    """
    if isinstance(path_or_file, (str, Path)):
        where = str(path_or_file)
        if not Path(where).is_file():
            raise FileNotFoundError(f"no such file: {where}")
        with open(where, "rb") as f:
            obj = _TensorDictUnpickler(f, where).load()
    else:
        where = getattr(path_or_file, "name", "<file object>")
        obj = _TensorDictUnpickler(path_or_file, str(where)).load()
    return _plain_tensor_dict(obj, str(where))


def _plain_tensor_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise FisherImportError(
            f"{where} holds a {type(obj).__name__}, not a dict of tensors: the authors' Fisher is "
            "one dict {parameter name: tensor}"
        )
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise FisherImportError(f"{where}: key {key!r} is a {type(key).__name__}; parameter names are strings")
        if not isinstance(value, torch.Tensor):
            kind = "a nested container" if isinstance(value, (dict, list, tuple)) else f"a {type(value).__name__}"
            raise FisherImportError(
                f"{where}: the value of {key!r} is {kind}, not a tensor; only one top-level dict of tensors is accepted"
            )
        out[key] = value.detach()
    return out


# --------------------------------------------------------------------------- names
def convert_keys(
    fisher: dict[str, torch.Tensor], unet_config: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """CompVis UNet names -> ``UNet2DConditionModel`` names, by diffusers' SD checkpoint converter.

    Keys may carry the authors' prefix (``diffusion_model.``) or a full checkpoint's
    (``model.diffusion_model.``). Returns the converted dict and the input keys it did not
    use (other prefixes, or names the converter does not know).
    """
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    checkpoint, origin, foreign = {}, {}, []
    for key, value in fisher.items():
        if key.startswith(LDM_PREFIX):
            full = key
        elif key.startswith(AUTHORS_PREFIX):
            full = "model." + key
        else:
            foreign.append(key)
            continue
        checkpoint[full] = value.detach()  # a fresh object per key, so each output can be traced to its input
        origin[id(checkpoint[full])] = key
    converted = convert_ldm_unet_checkpoint(checkpoint, dict(unet_config))
    # the converter reads some keys with .get(), so an absent input shows up as None
    converted = {k: v for k, v in converted.items() if v is not None}
    used = {origin[id(v)] for v in converted.values() if id(v) in origin}
    unused = foreign + [k for k in origin.values() if k not in used]
    return converted, unused


def _same_entries(a: torch.Size, b: torch.Size) -> bool:
    """``[o, i, 1, 1]`` vs ``[o, i]`` (either way): a reshape that keeps every entry where it is."""
    return len(a) >= 2 and len(b) >= 2 and a[:2] == b[:2] and all(d == 1 for d in (*a[2:], *b[2:]))


def check_against_unet(
    converted: dict[str, torch.Tensor], unet: nn.Module, unused: list[str] = (), where: str = "the Fisher"
) -> dict[str, torch.Tensor]:
    """The converted Fisher on exactly ``unet.named_parameters()``, shapes checked (1x1 conv <-> linear
    reshaped); otherwise :class:`FisherImportError` naming missing, unexpected and mis-shaped keys."""
    params = dict(unet.named_parameters())
    missing = sorted(set(params) - set(converted))
    unexpected = sorted(set(converted) - set(params)) + sorted(unused)
    out, wrong = {}, []
    for name, p in params.items():
        if name not in converted:
            continue
        v = converted[name]
        if v.shape == p.shape:
            out[name] = v
        elif _same_entries(v.shape, p.shape):
            out[name] = v.reshape(p.shape)
        else:
            wrong.append(f"{name}: Fisher {tuple(v.shape)} vs UNet {tuple(p.shape)}")
    if missing or unexpected or wrong:

        def first(items):
            return ", ".join(items[:6]) + (" ..." if len(items) > 6 else "")

        lines = [f"{where} does not fit this UNet (after renaming with {CONVERTER}):"]
        if missing:
            lines.append(f"  missing: {len(missing)} UNet parameters have no Fisher value: {first(missing)}")
        if unexpected:
            lines.append(f"  unexpected: {len(unexpected)} Fisher entries match no UNet parameter: {first(unexpected)}")
        if wrong:
            lines.append(f"  wrong shape ({len(wrong)}): {'; '.join(wrong[:6])}")
        lines.append(
            "The authors' Fisher is for SD v1.x's UNet (CompVis names under 'diffusion_model.'); load a "
            "pipeline with that UNet (e.g. CompVis/stable-diffusion-v1-4)."
        )
        raise FisherImportError("\n".join(lines))
    return out


# --------------------------------------------------------------------------- the import
def import_authors_fisher(
    pickle_path: str | Path,
    unet: nn.Module,
    output_path: str | Path,
    n_samples: int = DEFAULT_N_SAMPLES,
    model_config: dict[str, Any] | None = None,
):
    """Load the authors' ``fisher_dict.pkl`` safely, rename it for ``unet`` (a diffusers
    ``UNet2DConditionModel``), check it, and save it as a :class:`~sa_utils.core.fisher.DiagonalFisher`
    (float32, CPU) at ``output_path``. Returns the Fisher.

    ``n_samples``: how many images the file averages over (metadata only; the values are
    already means). ``model_config``: provenance stored with it (default: the UNet's config).
    """
    from diffusers import __version__ as diffusers_version

    from sa_utils.core.fisher import DiagonalFisher

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    pickle_path = Path(pickle_path)
    raw = restricted_load(pickle_path)  # before anything is written: a refused file leaves no output
    converted, unused = convert_keys(raw, unet.config)
    values = check_against_unet(converted, unet, unused, str(pickle_path))
    for name, v in values.items():
        if not v.is_floating_point():
            raise FisherImportError(f"{pickle_path}: {name} holds {v.dtype} values; a Fisher is floating point")
    values = {k: v.to("cpu", torch.float32).contiguous() for k, v in values.items()}
    for name, v in values.items():
        if not torch.isfinite(v).all() or (v < 0).any():
            raise FisherImportError(
                f"{pickle_path}: {name} has negative or non-finite entries; a diagonal Fisher "
                "(mean of squared gradients) is finite and >= 0"
            )
    if model_config is None:
        unet_cfg = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(unet.config).items() if not k.startswith("_")
        }
        model_config = {"model": "StableDiffusion-UNet2DConditionModel", "train_method": "full", "unet": unet_cfg}
    metadata = {
        "estimator": ESTIMATOR,
        "source": SOURCE,
        "converted_with": f"{CONVERTER} (diffusers {diffusers_version})",
        "source_file": pickle_path.name,
        "source_sha256": sha256(pickle_path),
        "model_config": model_config,
    }
    fisher = DiagonalFisher(values, int(n_samples), metadata)
    fisher.save(output_path)
    return fisher
