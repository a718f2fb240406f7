"""Prove that a decoder over 2 GB exports with ONNX external data, end to end (not run in CI).

Builds a random-weight BioGPT of a size whose fp32 decoder exceeds protobuf's 2 GB limit (default:
hidden 1024, 40 layers, 16 heads, vocabulary 42384: ~550M parameters, ~2.2 GB), with its output
projection scaled so next-token distributions are peaked, then runs `export_generation` (beam) on it
with a one-prompt parity case and prints what was written. Needs ~16 GB RAM and several minutes.
Use --shape biogpt-large for BioGPT-Large's configuration (hidden 1600, 48 layers, 25 heads,
vocabulary 57717, 2048 positions: ~1.6B parameters; needs more memory than CI machines have).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import BioGptConfig, BioGptForCausalLM

from gen_export.demo import DEMO_PROMPTS, build_tokenizer
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.parity import ParityCase
from gen_export.reference_search import SearchFlags

SHAPES = {
    "over-2gb": {"hidden_size": 1024, "num_hidden_layers": 40, "num_attention_heads": 16, "vocab_size": 42384,
                 "max_position_embeddings": 1024},
    "biogpt-large": {"hidden_size": 1600, "num_hidden_layers": 48, "num_attention_heads": 25,
                     "vocab_size": 57717, "max_position_embeddings": 2048},
}


def build(folder: Path, shape: dict[str, int]) -> Path:
    build_tokenizer(folder)
    vocab = len(json.loads((folder / "vocab.json").read_text()))
    config = BioGptConfig(**shape, intermediate_size=4 * shape["hidden_size"], pad_token_id=1, bos_token_id=0,
                          eos_token_id=2)
    assert config.vocab_size >= vocab
    torch.manual_seed(0)
    model = BioGptForCausalLM(config).eval()
    with torch.no_grad():
        model.output_projection.weight.mul_(30.0)  # peaked logits: parity on near-ties proves nothing
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="over-2gb")
    parser.add_argument("--output", type=Path, default=Path("out/large"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        model_dir = build(Path(scratch) / "model", SHAPES[args.shape])
        print(f"built random {args.shape} checkpoint in {time.perf_counter() - start:.0f} s")
        prompt = DEMO_PROMPTS[0]
        case = ParityCase("one prompt, beams 2", (prompt,), SearchFlags(max_length=16, num_beams=2,
                                                                         length_penalty=0.0))
        start = time.perf_counter()
        result = export_generation(model_dir, args.output, force=True, cases=[case],
                                   defaults=GenerationDefaults(max_length=16, num_beams=2, length_penalty=0.0))
    files = {p.name: p.stat().st_size for p in result.output.iterdir() if p.is_file()}
    print(f"exported in {time.perf_counter() - start:.0f} s: {json.dumps(files)}")
    assert any(name.endswith(".data") or "_data" in name for name in files), "expected an external data file"
    assert result.parity is not None
    print(f"parity: {result.parity.counts()}")


if __name__ == "__main__":
    main()
