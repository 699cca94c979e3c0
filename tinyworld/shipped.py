"""The tiny world's shelf of shipped files: its trained pipeline (``tiny-sd/``) and detectors."""

from __future__ import annotations

from pathlib import Path

from sa_utils.storage.shipped import Shelf

WEIGHTS_DIR = Path(__file__).parent / "weights"


def shelf() -> Shelf:
    """Read at call time, so tests can point it elsewhere."""
    return Shelf(WEIGHTS_DIR)
