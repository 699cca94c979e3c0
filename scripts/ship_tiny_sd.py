"""Ship a trained tiny pipeline with the package: copy it to sa_utils/weights/tiny-sd and list
every file (sha256, size, the command that trained it, its settings) in MANIFEST.json.

    python scripts/ship_tiny_sd.py --pipeline _build/tiny-sd \
        --command "python scripts/train_tiny_sd.py --output_dir _build/tiny-sd --vae_train_steps 4000 --max_train_steps 10000 --use_ema"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sa_utils.tinyworld.pipeline import ship_pipeline  # noqa: E402


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
