"""Train (or resume) a Part II base DDPM and record it in sa_utils/storage/weights/MANIFEST.json.

    python scripts/train_base_ddpm.py --mode quick            # MNIST, CPU: about 35 min on 2 cores
    python scripts/train_base_ddpm.py --mode full             # CIFAR-10, GPU

The checkpoint is trained in the cache (resumable), then copied to sa_utils/storage/weights with
its sha256 and this command in the manifest, which is what ``mnist_ddpm.pretrained_ddpm``
checks before it loads shipped weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from sa_utils.recipes import mnist_ddpm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's training steps")
    ap.add_argument(
        "--no-ship", action="store_true", help="train into the cache only; do not copy to sa_utils/storage/weights"
    )
    args = ap.parse_args(argv)
    overrides = {"train_steps": args.steps} if args.steps else {}
    r = mnist_ddpm.recipe(args.mode, **overrides)
    mnist_ddpm.pretrained_ddpm(r)
    name = mnist_ddpm.base_name(r)
    src = mnist_ddpm.shipped_weights(name) or mnist_ddpm._dir(r) / name
    if args.no_ship or src.parent == mnist_ddpm.WEIGHTS_DIR:
        print(f"base model: {src}")
        return 0
    dst = mnist_ddpm.WEIGHTS_DIR / name
    shutil.copyfile(src, dst)
    manifest = json.loads(mnist_ddpm.MANIFEST.read_text()) if mnist_ddpm.MANIFEST.exists() else {}
    cmd = f"python scripts/train_base_ddpm.py --mode {args.mode}" + (f" --steps {args.steps}" if args.steps else "")
    manifest[name] = {
        "sha256": mnist_ddpm._sha256(dst),
        "bytes": dst.stat().st_size,
        "command": cmd,
        "settings": r.train_settings(),
    }
    mnist_ddpm.MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"shipped {dst} ({dst.stat().st_size / 1e6:.1f} MB) and updated {mnist_ddpm.MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
