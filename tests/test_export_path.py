"""The one export path: optimum core specs + torch.onnx.export, on whichever transformers line is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from gen_export.errors import GenExportError
from gen_export.export.architectures.base import cache_keyword

ROOT = Path(__file__).resolve().parents[1]


def test_cache_keyword_is_read_from_the_forward(tiny_biogpt: Path) -> None:
    from transformers import BioGptForCausalLM

    model = BioGptForCausalLM.from_pretrained(tiny_biogpt)
    # transformers 5.24 renamed the forward's past_key_values to cache (the old name goes in 5.40).
    expected = "past_key_values" if transformers.__version__.startswith("4.") else "cache"
    assert cache_keyword(model) == expected

    class NoCache(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return input_ids

    with pytest.raises(GenExportError, match="takes neither `cache` nor `past_key_values`"):
        cache_keyword(NoCache())  # type: ignore[arg-type]


def test_exports_without_optimum_onnx(tiny_biogpt: Path, tmp_path: Path) -> None:
    """optimum.exporters.onnx (optimum-onnx) made unimportable: decoder and embedding exports still pass."""
    script = f"""
import sys
sys.modules["optimum.exporters.onnx"] = None
sys.modules["optimum.onnxruntime"] = None
from pathlib import Path
from gen_export.export.decoder import export_decoder
from gen_export.embed import export_embedding
result = export_decoder(Path({str(tiny_biogpt)!r}), Path({str(tmp_path / "decoder")!r}))
assert result.validation.passed
embedding = export_embedding(None, Path({str(tmp_path / "embed")!r}))
assert all(f.passed for f in embedding.parity) and embedding.normalize
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
