"""The benchmark scripts must not rot: run their --quick modes and check the table they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parents[1]


def test_bench_generate_quick(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_generate.py"), "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| shape"))
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "shape", "batch", "new tokens", "contender", "median s", "min–max s", "tokens/s", "vs generate",
        "floor s", "floor / median", "same as generate", "same as fp32 graph"]
    assert any(line.startswith("Threads: torch 2, onnxruntime intra-op 2") for line in lines)
    rows = {cells[4]: cells for cells in ([c.strip() for c in line.split("|")] for line in lines
                                          if line.startswith("| tiny"))}
    fused = "genexport fused BeamSearch "
    # The optimum-loop contender exists where its optional extra installs: the transformers 4.57 line.
    optimum_loop = transformers.__version__.startswith("4.57.")
    assert list(rows) == ["torch generate", *(["optimum ORT + Python beam loop (GPT-2 same dims)"] * optimum_loop),
                          *(fused + v for v in ("fp32", "fp32-noinit", "fp32-opt", "int8", "int4", "int8-opt",
                                                 "int4-opt", "int8-all", "int4-all")),
                          "genexport transformers-rules Loop fp32"]
    assert ("optimum ORT + Python beam loop contender is left out" in out.stdout) is not optimum_loop
    for cells in rows.values():
        assert float(cells[5]) > 0 and float(cells[7]) > 0 and float(cells[9]) > 0  # median, tokens/s, floor
        assert float(cells[8].rstrip("x")) > 0
    # The exact fp32 graphs (plain, without init decoder, optimized) must give generate's tokens, or their
    # speed means nothing.
    assert {rows[fused + v][11] for v in ("fp32", "fp32-noinit", "fp32-opt")} == {"1/1 seq, 100% tok"}
    assert rows["genexport transformers-rules Loop fp32"][11] == "1/1 seq, 100% tok"
    assert rows[fused + "int8"][12].endswith("tok") and rows["torch generate"][11] == "–"
    assert (tmp_path / "generate.md").read_text().count("| tiny") == 11 + optimum_loop
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


def test_bench_decoder_step_quick() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_decoder_step.py"), "--quick"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.stdout.splitlines()
            if line.startswith("| tiny")]
    # Two scenarios x three decoders, each timed; the exported decoder is its own 1.00x baseline.
    assert [(r[1].split(",")[0], r[2]) for r in rows] == [
        (scenario, decoder) for scenario in ("one-token step", "first step")
        for decoder in ("exported", "MultiHeadAttention", "Attention")]
    assert all(float(r[3]) > 0 for r in rows) and {r[5] for r in rows if r[2] == "exported"} == {"1.00x"}
