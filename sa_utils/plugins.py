"""Packages that extend ``sa_utils`` without ``sa_utils`` importing them.

A package names a function in the ``sa_utils.plugins`` entry-point group of its
``pyproject.toml``; :func:`load_plugins` calls each once, the first time a registry
(:func:`sa_utils.eval.detectors.load_detector`, :func:`sa_utils.recipes.worlds.world_for`)
meets a name it does not know. The tiny world is such a plugin (``tinyworld.plugin:register``).
"""

from __future__ import annotations

_LOADED = False


def load_plugins() -> None:
    """Call every ``sa_utils.plugins`` entry point once per process."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="sa_utils.plugins"):
        ep.load()()
