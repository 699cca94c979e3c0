"""The CLIP tokenizer of Stable Diffusion v1.x, built offline from the BPE file open_clip ships.

Stable Diffusion v1.4 tokenizes prompts with OpenAI CLIP's byte-level BPE (49,408 tokens,
77 positions). The tokens come from one gzipped text file, ``bpe_simple_vocab_16e6.txt.gz``
(MIT licence, OpenAI), that the ``open_clip_torch`` wheel carries. Its lines after the
header are the merges in priority order; the vocabulary is the 256 byte symbols, the same
symbols with the end-of-word mark ``</w>``, one token per merge, and the two special
tokens -- 256 + 256 + 48,894 + 2 = 49,408.

transformers 5 gotcha: ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently builds a
2-token tokenizer, so this module writes ``vocab.json`` + ``merges.txt``
(:func:`save_tokenizer_files`, the layout of SD's ``tokenizer/`` folder) and loads them
with ``CLIPTokenizer.from_pretrained(folder)``, which works in transformers 4 and 5.
Padding follows SD v1.4 (``<|endoftext|>``); open_clip pads with 0 instead, which is the
only difference a test finds.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49_408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
"""Positions of SD v1.x's text encoder; the tiny pipeline may use fewer (see :mod:`.pipeline`)."""


def bpe_file() -> Path:
    """Where open_clip's copy of the CLIP BPE file is (open_clip is located, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the CLIP BPE file ships with open_clip_torch; install it with "
            '`pip install -e ".[sd]"` (or `pip install open_clip_torch`), or pass bpe_path='
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BPE_FILENAME
    if not path.exists():
        raise FileNotFoundError(f"open_clip is installed but {path} is missing; reinstall open_clip_torch")
    return path


def byte_symbols() -> list[str]:
    """The 256 printable characters CLIP's BPE uses for the bytes 0..255, in vocabulary order.

    Printable Latin-1 bytes stand for themselves; the others (control characters, space,
    a few more) are moved to code points 256 and up, in byte order.
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    moved = [b for b in range(256) if b not in set(keep)]
    return [chr(b) for b in keep] + [chr(256 + k) for k in range(len(moved))]


@lru_cache(maxsize=4)
def vocab_and_merges(bpe_path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's token -> id table and its merges (pairs, highest priority first)."""
    path = Path(bpe_path) if bpe_path else bpe_file()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + N_MERGES]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(
            f"{path} does not look like CLIP's BPE file (expected {N_MERGES} merge pairs after the header)"
        )
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"built {len(vocab)} distinct tokens from {path}, expected {VOCAB_SIZE}")
    return vocab, merges


def clip_tokenizer(model_max_length: int = MAX_LENGTH, bpe_path: str | None = None):
    """A ``transformers.CLIPTokenizer`` with the real CLIP vocabulary, built without a download.

    The files go through a temporary ``vocab.json`` + ``merges.txt`` folder, the form
    ``from_pretrained`` reads in transformers 4 and 5 alike.
    """
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="clip-tokenizer-") as tmp:
        save_tokenizer_files(tmp, bpe_path)
        tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=model_max_length, local_files_only=True)
    if len(tok) != VOCAB_SIZE:
        raise RuntimeError(f"CLIPTokenizer has {len(tok)} tokens, expected {VOCAB_SIZE}: transformers changed its API")
    return tok


def save_tokenizer_files(folder: str | Path, bpe_path: str | None = None) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (the layout of SD's ``tokenizer/`` folder) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges(str(bpe_path) if bpe_path else None)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return folder


def token_count(text: str, tokenizer=None) -> int:
    """Number of BPE tokens in ``text`` without the start and end tokens."""
    tok = tokenizer or clip_tokenizer()
    return len(tok(text, add_special_tokens=False).input_ids)
