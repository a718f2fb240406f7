"""The benchmark scripts must not rot: run their --quick modes and check the table they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_generate_quick(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_generate.py"), "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| tiny")]
    assert [row.split("|")[4].strip() for row in rows] == [
        "torch generate", "optimum ORT + Python beam loop (GPT-2 same dims)", "genexport fused BeamSearch fp32",
        "genexport fused BeamSearch int8", "genexport fused BeamSearch int4"]
    for row in rows:
        median = float(row.split("|")[5])
        assert median > 0
    assert (tmp_path / "generate.md").read_text().count("| tiny") == 5
    assert (tmp_path / "generate.png").stat().st_size > 1000


def test_bench_embed_quick(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_embed.py"), "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| all-MiniLM")]
    assert [row[4].strip() for row in rows] == ["PyTorch", "onnxruntime fp32", "onnxruntime optimized",
                                                 "onnxruntime int8"]
    cosines = {row[4].strip(): float(row[7]) for row in rows}
    assert cosines["onnxruntime fp32"] >= 0.99999 and cosines["onnxruntime int8"] < 1.0
    assert all(float(row[5]) > 0 for row in rows)
    assert (tmp_path / "embed.md").is_file()
