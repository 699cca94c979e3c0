"""Train (or load from the cache) the tiny world's default detectors and ship them in tinyworld/weights.

    python scripts/ship_detectors.py          # identity and attribute detectors: about 3 min on 2 cores

Chapters 8 and 9 judge the tiny pipeline's images with these two CNNs. They are evaluators, not a
lesson, so the default ones ship (``pretrained_detector`` looks in ``tinyworld/weights`` first, checked
by sha256); a detector with other settings is still trained into the cache.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict

from tinyworld.detectors import DetectorRecipe, detector_path, pretrained_detector
from tinyworld.shipped import shelf


def main() -> int:
    s = shelf()
    for task in ("identity", "attribute"):
        recipe = DetectorRecipe(task)
        name = detector_path(recipe).name
        if s.file(name):
            print(f"already shipped: {s.folder / name}")
            continue
        pretrained_detector(task)
        shutil.copyfile(detector_path(recipe), s.folder / name)
        s.record(name, "python scripts/ship_detectors.py", asdict(recipe))
        print(f"shipped {s.folder / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
