"""Small checkpoints shipped inside a package, each checked by sha256.

A :class:`Shelf` is a ``weights/`` folder with a ``MANIFEST.json`` that lists every shipped
file (a path relative to the folder) with its sha256, size, the exact command that produced
it and its settings. A file whose hash differs is refused with the command that rebuilds it.
``sa_utils`` ships the MNIST files of Parts I and II here (:data:`WEIGHTS_DIR`); the tiny world
has a shelf of its own (``tinyworld/weights``). Only the ``scripts/ship_*.py`` write to a
shelf (:meth:`Shelf.record`); the library reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sa_utils.storage.checkpoint import CheckpointError

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


class Shelf:
    """A folder of shipped files and the manifest that lists them."""

    def __init__(self, folder: str | Path, manifest: str | Path | None = None):
        self.folder = Path(folder)
        self.manifest_path = Path(manifest) if manifest is not None else self.folder / "MANIFEST.json"

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}

    def file(self, name: str) -> Path | None:
        """The path of a shipped file after checking its sha256, or ``None`` if it is not shipped."""
        path = self.folder / name
        if not path.exists():
            return None
        entry = self.manifest().get(name)
        if entry is None:
            raise CheckpointError(
                f"{path} is not listed in {self.manifest_path}; ship files with the script that made them"
            )
        digest = sha256(path)
        if digest != entry["sha256"]:
            raise CheckpointError(
                f"{path} has sha256 {digest}, but {self.manifest_path} says {entry['sha256']}: "
                "the file is corrupt or was replaced. Restore it from git, or rebuild it with: "
                f"{entry['command']}"
            )
        return path

    def record(self, name: str, command: str, settings: dict[str, Any]) -> None:
        """Add (or update) the manifest entry of the shipped file ``folder / name`` (scripts only)."""
        path = self.folder / name
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path} is {path.stat().st_size / 2**20:.1f} MiB; shipped files must stay <= 20 MiB")
        entries = self.manifest()
        entries[name] = {"sha256": sha256(path), "bytes": path.stat().st_size, "command": command, "settings": settings}
        self.manifest_path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def shelf() -> Shelf:
    """The shelf of ``sa_utils`` itself (read at call time, so tests can point it elsewhere)."""
    return Shelf(WEIGHTS_DIR, MANIFEST)


def manifest() -> dict[str, Any]:
    return shelf().manifest()


def shipped_file(name: str) -> Path | None:
    return shelf().file(name)


def record(name: str, command: str, settings: dict[str, Any]) -> None:
    shelf().record(name, command, settings)
