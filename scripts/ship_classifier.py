"""Train (or load from the cache) Part I's MNIST evaluation classifier and ship it in sa_utils/weights.

    python scripts/ship_classifier.py --mode quick     # 2 epochs: about 20 s on 2 cores

The classifier is trained by ``zoo.pretrained_classifier`` into the cache (the same code path a
chapter takes when nothing is shipped), then copied to ``sa_utils/weights`` and recorded in its
manifest with its sha256, this command and its training settings.
"""
from __future__ import annotations

import argparse
import shutil

from sa_utils import shipped, zoo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    args = ap.parse_args(argv)
    r = zoo.recipe(args.mode)
    name = zoo.classifier_name(r)
    if shipped.shipped_file(name):
        print(f"already shipped: {shipped.WEIGHTS_DIR / name}")
        return 0
    zoo.pretrained_classifier(r)
    shutil.copyfile(zoo._mnist_dir() / name, shipped.WEIGHTS_DIR / name)
    shipped.record(name, f"python scripts/ship_classifier.py --mode {args.mode}", zoo.classifier_settings(r))
    print(f"shipped {shipped.WEIGHTS_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
