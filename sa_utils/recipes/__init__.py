"""Load-before-you-train recipes: the settings and cached steps each part of the book runs.

* :mod:`.base`             -- what every recipe shares (mode, the SA settings, the checkpoint rule)
* :mod:`.mnist_vae`        -- Part I: the conditional VAE on MNIST
* :mod:`.mnist_ddpm`       -- Part II: the class-conditional DDPM on MNIST
* :mod:`.stable_diffusion` -- Part III: any diffusers Stable Diffusion pipeline, in a :mod:`.worlds` world
* :mod:`.sd_memory`        -- what one SA step holds in memory on an SD-shaped UNet
"""
