"""Progress bars for every long loop of the library: a widget where someone watches, text where nobody does.

In an interactive notebook (Jupyter, Colab) :func:`progress_bar` is ``tqdm.auto.tqdm``: a live widget.
When a notebook is executed unattended (``tools/book.py`` sets ``SA_PROGRESS=text``, and so can
anyone running papermill) a widget would be saved in the executed notebook frozen at whatever it
showed last ("0%| | 0/469") and would render as an empty box in the HTML. There it is a text bar
instead: a new line at most every ``SA_PROGRESS_SECONDS`` (default 30) seconds plus the final one,
with no carriage returns or cursor moves, so the saved output reads as a short log.
"""

from __future__ import annotations

import importlib
import os
import sys

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

MODES = ("auto", "text")


def mode() -> str:
    """``$SA_PROGRESS`` (``auto`` or ``text``); unset means ``auto``."""
    value = os.environ.get("SA_PROGRESS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(
            f"SA_PROGRESS={value!r} is not a progress mode; use one of {', '.join(MODES)} "
            "(text: plain lines for unattended runs, auto: a widget in notebooks)"
        )
    return value


class _Lines:
    """A stream wrapper that turns tqdm's in-place redraws into whole lines (blank redraws dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\x1b[A", "").replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _TextBar(text_tqdm):
    """tqdm's text bar whose postfix updates wait for the next timed line instead of forcing one."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress_bar(*args, **kwargs):
    """A tqdm bar (same arguments as ``tqdm.tqdm``), drawn as :data:`mode` says."""
    if mode() == "auto":
        return auto_tqdm(*args, **kwargs)
    seconds = os.environ.get("SA_PROGRESS_SECONDS", "30")
    try:
        interval = float(seconds)
    except ValueError:
        raise ValueError(f"SA_PROGRESS_SECONDS={seconds!r} is not a number of seconds (e.g. 30)") from None
    kwargs.setdefault("mininterval", interval)
    kwargs.setdefault("maxinterval", max(interval, 10.0))
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("ncols", 110)
    kwargs["file"] = _Lines(kwargs.get("file") or sys.stderr)
    return _TextBar(*args, **kwargs)


def quiet_library_bars() -> None:
    """In text mode, turn off the loading and download bars of diffusers, transformers and
    huggingface_hub, which draw their own ``tqdm.auto`` widgets ("Loading pipeline components...").
    Called by the library's pipeline and model loaders; does nothing in ``auto`` mode."""
    if mode() != "text":
        return
    for module, off in (
        ("diffusers.utils.logging", "disable_progress_bar"),
        ("transformers.utils.logging", "disable_progress_bar"),
        ("huggingface_hub.utils", "disable_progress_bars"),
    ):
        try:
            getattr(importlib.import_module(module), off)()
        except (ImportError, AttributeError):  # the `sd` extra is not installed, or another version
            continue
