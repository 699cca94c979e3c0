"""Small checkpoints shipped inside the package (``sa_utils/weights``), each checked by sha256.

``weights/MANIFEST.json`` lists every shipped file (a path relative to ``weights/``) with
its sha256, size, the exact command that produced it and its settings. A file whose hash
differs is refused with the command that rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"
MAX_BYTES = 20 * 2**20
"""No shipped file may be larger than this (20 MiB)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest() -> dict[str, Any]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def shipped_file(name: str) -> Path | None:
    """The path of a shipped file after checking its sha256, or ``None`` if it is not shipped."""
    path = WEIGHTS_DIR / name
    if not path.exists():
        return None
    entry = manifest().get(name)
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {MANIFEST}; ship files with the script that made them")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"{path} has sha256 {digest}, but {MANIFEST} says {entry['sha256']}: the file is "
                              f"corrupt or was replaced. Restore it from git, or rebuild it with: {entry['command']}")
    return path


def record(name: str, command: str, settings: dict[str, Any]) -> None:
    """Add (or update) the manifest entry of the shipped file ``WEIGHTS_DIR / name``."""
    path = WEIGHTS_DIR / name
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size / 2**20:.1f} MiB; shipped files must stay <= 20 MiB")
    entries = manifest()
    entries[name] = {"sha256": sha256(path), "bytes": path.stat().st_size, "command": command, "settings": settings}
    MANIFEST.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
