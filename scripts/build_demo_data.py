"""Regenerate the shipped demo and fixture checkpoints (gen_export/data/demo) on the transformers 4.57 line.

    .venv-tf4/bin/python scripts/build_demo_data.py

They are shipped rather than trained on first use because training differs between transformers lines
(see gen_export.demo.SHIPPED_DIR); 4.57.6 is the line they were first trained on, so every test expectation
written against them still holds. Takes about a minute on one core; prints the folder sizes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_decoders import build_checkpoint as build_fixture  # noqa: E402

from gen_export.demo import DEMO_SIZES, SHIPPED_DIR, build_checkpoint  # noqa: E402


def main() -> None:
    if not transformers.__version__.startswith("4.57."):
        sys.exit(f"run on the transformers 4.57 line (.venv-tf4), not {transformers.__version__}")
    shutil.rmtree(SHIPPED_DIR, ignore_errors=True)
    for size in DEMO_SIZES:
        build_checkpoint(SHIPPED_DIR / f"biogpt-{size}", size=size)
    for kind in ("gpt2", "opt"):
        build_fixture(kind, SHIPPED_DIR / kind)
    total = 0
    for folder in sorted(SHIPPED_DIR.iterdir()):
        size = sum(p.stat().st_size for p in folder.iterdir())
        total += size
        print(f"{folder.name:14s} {size / 1024:7.0f} KB")
    print(f"{'total':14s} {total / 1024:7.0f} KB")


if __name__ == "__main__":
    main()
