"""Clear the outputs and execution counts of notebooks, in place (the pre-commit hook; CI executes them).

    python tools/strip_outputs.py book/part1_vae/02_conditional_vae.ipynb ...
    python tools/strip_outputs.py --check book/*/*.ipynb    # exit 1 if any notebook holds outputs

The file keeps nbformat's layout (one-space indent, UTF-8), so a stripped notebook diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def strip(nb: dict) -> bool:
    """Remove outputs and execution counts; True if anything changed."""
    changed = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            cell["outputs"], changed = [], True
        if cell.get("execution_count") is not None:
            cell["execution_count"], changed = None, True
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--check", action="store_true", help="only report notebooks with outputs; change nothing")
    args = p.parse_args(argv)
    dirty = []
    for path in args.notebooks:
        nb = json.loads(path.read_text())
        if strip(nb):
            dirty.append(path)
            if not args.check:
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    for path in dirty:
        print(f"{path}: {'holds outputs' if args.check else 'outputs stripped'}")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
