"""Real-size run (slow: minutes and ~16 GB RAM): a >2 GB decoder goes to ONNX external data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_decoder_over_2gb_uses_external_data(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_large.py"), "--output", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "parity: {'match': 1" in out.stdout
