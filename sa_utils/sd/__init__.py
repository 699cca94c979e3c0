"""Selective Amnesia for any diffusers Stable Diffusion pipeline (Part III), in five steps.

1-2. :func:`imagesets.generate_image_set`: the replay set (generic prompts) and the surrogate set.
3.   :func:`fisher.sd_fisher`: the UNet's diagonal Fisher over the replay set (multi-process, resumable).
4.   :func:`forget.sd_forget`: the one SA routine with :class:`sa_utils.adapters.sd.StableDiffusionAdapter`.
5.   :func:`evaluate.sd_evaluate`: before/after grids and detector rates.

``python -m sa_utils.sd --help`` runs them from the command line.
"""
