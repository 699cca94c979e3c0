"""Score a tiny-world pipeline with the independent detectors (Part III).

    OMP_NUM_THREADS=2 python scripts/evaluate_tiny_sd.py --pipeline _build/tiny-sd

prints, per identity, the share of images of its prompts that the identity detector assigns
to it (seen phrasings and paraphrases), and the attribute rates for prompts that name it,
lead to it unnamed, or are unrelated; writes the same as JSON to
``<pipeline>/evaluation.json``. The detectors are loaded from the cache or trained first
(about a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tinyworld.detectors import pretrained_detector  # noqa: E402
from tinyworld.pipeline import load_tiny_pipeline  # noqa: E402
from tinyworld.scoring import format_report, score_pipeline  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--pipeline", required=True, help="A diffusers pipeline folder (e.g. the --output_dir of train_tiny_sd.py)."
    )
    p.add_argument("--images_per_prompt", type=int, default=4, help="Images drawn for every prompt.")
    p.add_argument("--steps", type=int, default=20, help="Sampling steps.")
    p.add_argument("--guidance_scale", type=float, default=5.0, help="Classifier-free guidance scale.")
    p.add_argument(
        "--scheduler",
        default=None,
        choices=[None, "ddim", "pndm", "ddpm"],
        help="Swap the pipeline's sampler (default: the one saved with it).",
    )
    p.add_argument("--seed", type=int, default=0, help="Image i of a prompt list uses seed + i.")
    p.add_argument("--out", default=None, help="JSON file to write (default: <pipeline>/evaluation.json).")
    args = p.parse_args(argv)
    pipe = load_tiny_pipeline(args.pipeline, scheduler=args.scheduler)
    ident, attr = pretrained_detector("identity"), pretrained_detector("attribute")
    t0 = time.time()
    report = score_pipeline(pipe, ident, attr, args.images_per_prompt, args.steps, args.guidance_scale, args.seed)
    report["seconds"] = time.time() - t0
    print(format_report(report))
    out = Path(args.out) if args.out else Path(args.pipeline) / "evaluation.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({report['seconds']:.0f} s of sampling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
