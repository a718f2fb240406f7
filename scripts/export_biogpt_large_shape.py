"""Prove BioGPT-Large's configuration exports: decoder + BeamSearch graph with ONNX external data (> 2 GB).

Builds a random-weight `BioGptForCausalLM` with BioGPT-Large's shape (hidden 1600, 48 layers, 25 heads,
vocabulary 57717, 2048 positions, FFN 6400: ~1.57B parameters, ~6.3 GB in fp32; no hub download), runs
`export_generation` (beam search) on it and checks the graph's tokens against `model.generate` on one
prompt. Not run in CI: at full depth it needs well over 16 GB RAM (the model, the traced ONNX proto and
onnxruntime's copy coexist) and many minutes on a small machine. `--num-layers N` keeps the width, heads,
vocabulary and positions but fewer layers; 12 layers is the smallest depth whose decoder still exceeds
protobuf's 2 GB limit, so it exercises the same external-data path on a 16 GB machine.

Random weights give near-tied logits, where token parity proves nothing, so the (untied) output
projection is scaled up, and the script prints the smallest top-1 / top-2 logit margin along the
greedy continuation, so a reader can judge the margin the parity rides on.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import BioGptConfig, BioGptForCausalLM, BioGptTokenizer

from gen_export.demo import DEMO_PROMPTS, build_tokenizer
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.search.search_graph import SearchMode
from gen_export.verify.parity import ParityCase
from gen_export.verify.reference_search import SearchFlags

BIOGPT_LARGE = {"hidden_size": 1600, "num_hidden_layers": 48, "num_attention_heads": 25, "vocab_size": 57717,
                "max_position_embeddings": 2048, "intermediate_size": 6400}
#: Scale of the (tied) output projection: peaked next-token logits on random weights.
LOGIT_SCALE = 30.0


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def build(folder: Path, num_layers: int, prompt: str, new_tokens: int) -> tuple[Path, float, int]:
    """Random BioGPT-Large-shaped checkpoint; returns (folder, smallest logit margin, parameters)."""
    build_tokenizer(folder)  # the demo corpus' BPE: ids are a prefix of the 57717-token vocabulary
    shape = BIOGPT_LARGE | {"num_hidden_layers": num_layers}
    # Untied output projection: scaling a *tied* one also scales the input embeddings, and the random
    # model then predicts the token it just read, forever (seen: one id repeated). The ONNX decoder's
    # size is the same either way: the TorchScript exporter stores a tied projection twice.
    config = BioGptConfig(**shape, pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = BioGptForCausalLM(config).eval()
    with torch.no_grad():
        model.output_projection.weight.mul_(LOGIT_SCALE)
    tokenizer = BioGptTokenizer.from_pretrained(folder)
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=1, output_scores=True, return_dict_in_generate=True)
    margins = [float(step[0].topk(2).values[0] - step[0].topk(2).values[1]) for step in out.scores]
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True)
    del model, out
    gc.collect()
    return folder, min(margins), parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("out/biogpt-large-shape"))
    parser.add_argument("--num-layers", type=int, default=BIOGPT_LARGE["num_hidden_layers"])
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--num-beams", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=None,
                        help="Folder for the checkpoint (default: the system temp folder).")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="biogpt-large-", dir=args.scratch))
    prompt = DEMO_PROMPTS[0]
    try:
        start = time.perf_counter()
        model_dir, margin, parameters = build(scratch / "model", args.num_layers, prompt, args.new_tokens)
        built_s = time.perf_counter() - start
        print(f"built random BioGPT-Large-shaped checkpoint ({args.num_layers} layers, "
              f"{parameters / 1e9:.2f}B parameters) in {built_s:.0f} s; smallest greedy top-1/top-2 logit "
              f"margin {margin:.3f}")
        prompt_len = len(BioGptTokenizer.from_pretrained(model_dir)(prompt)["input_ids"])
        max_length = prompt_len + args.new_tokens
        flags = SearchFlags(max_length=max_length, num_beams=args.num_beams, length_penalty=0.0)
        case = ParityCase(f"one prompt, beams {args.num_beams}", (prompt,), flags)
        start = time.perf_counter()
        result = export_generation(
            model_dir, args.output, mode=SearchMode.BEAM, force=True, cases=[case],
            defaults=GenerationDefaults(max_length=max_length, num_beams=args.num_beams, length_penalty=0.0),
        )
        export_s = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = {p.name: p.stat().st_size for p in result.output.iterdir() if p.is_file()}
    assert result.parity is not None
    row = result.parity.results[0]
    summary = {
        "num_layers": args.num_layers, "parameters": parameters, "build_s": round(built_s, 1),
        "export_s": round(export_s, 1), "timings": {k: round(v, 1) for k, v in result.timings.items()},
        "files": files, "peak_rss_gb": round(peak_rss_gb(), 2), "min_logit_margin": round(margin, 3),
        "graph_tokens": row.graph, "generate_tokens": row.generate, "verdict": row.verdict.value,
    }
    print("summary: " + json.dumps(summary))  # one line, parsed by tests/test_biogpt_large_shape.py
    external = [name for name in files if name.endswith(".data")]
    if not external:
        print("FAILED: expected the graph's weights in an external .data file", file=sys.stderr)
        return 1
    if not result.parity.passed or row.graph != row.generate:
        print("FAILED: graph tokens differ from generate", file=sys.stderr)
        return 1
    print(f"parity: {result.parity.counts()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
