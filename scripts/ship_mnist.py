"""Make the shipped MNIST files of Parts I and II in the cache and ship them in sa_utils/storage/weights.

    python scripts/ship_mnist.py classifier --mode quick   # evaluation classifier, 2 epochs: ~20 s on 2 cores
    python scripts/ship_mnist.py cvae --mode quick         # theta*, the CVAE, 10 epochs: ~3 min on 2 cores
    python scripts/ship_mnist.py ddpm-pool --mode quick    # chapter 7's 550 guided samples of theta*: ~75 s

Each file is made by the same ``mnist_vae`` / ``mnist_ddpm`` function a chapter calls when nothing is
shipped (``mnist_vae.pretrained_classifier``, ``mnist_vae.pretrained_cvae(train=True)``,
``mnist_ddpm.model_pool(draw=True)``), then copied to ``sa_utils/storage/weights`` and recorded in the
manifest with its sha256, this command and its settings. Training and sampling are deterministic
on a CPU, so rerunning a command rebuilds the same tensors (the sha256 may differ only in stored
training-loss floats of another torch build). The file names are digests of their settings (the
pool's of theta*'s exact weights), so a changed recipe or model never loads a stale file.
"""

from __future__ import annotations

import argparse
import shutil

from sa_utils.recipes import mnist_ddpm, mnist_vae
from sa_utils.storage import shipped


def classifier(mode: str):
    r = mnist_vae.recipe(mode)
    return (
        mnist_vae.classifier_name(r),
        lambda: mnist_vae.pretrained_classifier(r),
        mnist_vae.classifier_settings(r),
        mnist_vae._mnist_dir(),
    )


def cvae(mode: str):
    r = mnist_vae.recipe(mode)
    return (
        mnist_vae.cvae_name(r),
        lambda: mnist_vae.pretrained_cvae(r, train=True),
        mnist_vae.cvae_settings(r),
        mnist_vae._mnist_dir(),
    )


def ddpm_pool(mode: str):
    r = mnist_ddpm.recipe(mode)
    base = mnist_ddpm.pretrained_ddpm(r)
    return (
        mnist_ddpm.pool_name(base, r),
        lambda: mnist_ddpm.model_pool(base, r, draw=True),
        mnist_ddpm.pool_settings(base, r),
        mnist_ddpm._dir(r),
    )


MODELS = {"classifier": classifier, "cvae": cvae, "ddpm-pool": ddpm_pool}
"""name -> function of the mode giving (file name, make it in the cache, its settings, cache folder)."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    args = ap.parse_args(argv)
    name, make, settings, folder = MODELS[args.model](args.mode)
    if shipped.shipped_file(name):
        print(f"already shipped: {shipped.WEIGHTS_DIR / name}")
        return 0
    make()
    shutil.copyfile(folder / name, shipped.WEIGHTS_DIR / name)
    shipped.record(name, f"python scripts/ship_mnist.py {args.model} --mode {args.mode}", settings)
    print(f"shipped {shipped.WEIGHTS_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
