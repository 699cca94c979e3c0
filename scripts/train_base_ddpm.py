"""Train (or resume) a Part II base DDPM and record it in sa_utils/weights/MANIFEST.json.

    python scripts/train_base_ddpm.py --mode quick            # MNIST, CPU: about 35 min on 2 cores
    python scripts/train_base_ddpm.py --mode full             # CIFAR-10, GPU

The checkpoint is trained in the cache (resumable), then copied to sa_utils/weights with
its sha256 and this command in the manifest, which is what ``zoo_ddpm.pretrained_ddpm``
checks before it loads shipped weights.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from sa_utils import zoo_ddpm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's training steps")
    ap.add_argument("--no-ship", action="store_true", help="train into the cache only; do not copy to sa_utils/weights")
    args = ap.parse_args(argv)
    overrides = {"train_steps": args.steps} if args.steps else {}
    r = zoo_ddpm.recipe(args.mode, **overrides)
    zoo_ddpm.pretrained_ddpm(r)
    name = zoo_ddpm.base_name(r)
    src = zoo_ddpm.shipped_weights(name) or zoo_ddpm._dir(r) / name
    if args.no_ship or src.parent == zoo_ddpm.WEIGHTS_DIR:
        print(f"base model: {src}")
        return 0
    dst = zoo_ddpm.WEIGHTS_DIR / name
    shutil.copyfile(src, dst)
    manifest = json.loads(zoo_ddpm.MANIFEST.read_text()) if zoo_ddpm.MANIFEST.exists() else {}
    cmd = f"python scripts/train_base_ddpm.py --mode {args.mode}" + (f" --steps {args.steps}" if args.steps else "")
    manifest[name] = {"sha256": zoo_ddpm._sha256(dst), "bytes": dst.stat().st_size, "command": cmd,
                      "settings": r.train_settings()}
    zoo_ddpm.MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"shipped {dst} ({dst.stat().st_size / 1e6:.1f} MB) and updated {zoo_ddpm.MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
