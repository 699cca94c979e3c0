"""Ship a trained tiny pipeline with the package: copy it to tinyworld/weights/tiny-sd and list
every file (sha256, size, the command that trained it, its settings) in MANIFEST.json.

    python scripts/ship_tiny_sd.py --pipeline _build/tiny-sd \
        --command "python scripts/train_tiny_sd.py --output_dir _build/tiny-sd --vae_train_steps 4000 \
                   --max_train_steps 10000 --use_ema"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tinyworld.pipeline import SHIPPED  # noqa: E402
from tinyworld.shipped import shelf  # noqa: E402


def ship_pipeline(folder: str | Path, command: str, settings: dict[str, Any], to=None) -> Path:
    """Copy a saved pipeline's files onto the tiny world's shelf (``to``, default
    :func:`tinyworld.shipped.shelf`) and list each in its manifest."""
    s = to or shelf()
    src, dst = Path(folder), s.folder / SHIPPED
    if not (src / "model_index.json").exists():
        raise FileNotFoundError(f"{src} is not a diffusers pipeline folder (no model_index.json)")
    shutil.rmtree(dst, ignore_errors=True)
    files = [
        p
        for p in sorted(src.rglob("*"))
        if p.is_file()
        and not p.relative_to(src).parts[0].startswith("checkpoint-")
        and p.suffix in (".json", ".safetensors", ".txt")
        and p.name not in ("logs.jsonl", "training_args.json")
    ]
    for p in files:
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out)
        s.record(f"{SHIPPED}/{p.relative_to(src).as_posix()}", command, settings)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", required=True, help="output folder of scripts/train_tiny_sd.py")
    p.add_argument("--command", required=True, help="the exact training command, recorded in the manifest")
    args = p.parse_args(argv)
    folder = Path(args.pipeline)
    settings_file = folder / "training_args.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    settings.pop("output_dir", None)
    settings.pop("resume_from_checkpoint", None)
    dst = ship_pipeline(folder, args.command, settings)
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    print(f"shipped {dst} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
