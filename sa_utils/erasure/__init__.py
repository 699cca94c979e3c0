"""Other concept-erasure methods, for comparing SA with them (Part IV; issue 17).

* :mod:`.uce` -- Unified Concept Editing (Gandikota et al., WACV 2024): closed-form edit of the
  cross-attention key and value projections.
* :mod:`.esd` -- Erased Stable Diffusion (Gandikota et al., ICCV 2023): fine-tuning towards the
  frozen model's negatively guided noise, inside (esd-x) or outside (esd-u) cross-attention.

Each method takes the same :class:`sa_utils.adapters.sd.StableDiffusionAdapter` as SA and writes
a pipeline folder plain diffusers loads (``python -m sa_utils.sd erase``).
"""
