"""One decoder step, side by side: the exported decoder vs the same decoder with attention fused two ways.

Isolates what `--optimize` changes inside the fused graph: the per-step cost of the decoder subgraph with
(a) the exported graph, (b) genexport's fusion into `com.microsoft.MultiHeadAttention` (the default), and
(c) into the older `com.microsoft.Attention` operator. Random-weight BioGPT shapes made by the script, the
same inputs for all three, runs alternating, medians and min/max; the outputs are compared first (a fast
wrong graph means nothing).

    .venv/bin/python scripts/bench_decoder_step.py [--quick] [--shapes mid base] [--rows 4] [--past 24]
        [--runs 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import SHAPES, build_biogpt

from gen_export.export.decoder import export_decoder_onnx, load_decoder
from gen_export.runtime import make_session
from gen_export.search.fusion import optimize_decoder

VARIANTS = {"exported": None, "MultiHeadAttention": "MultiHeadAttention", "Attention": "Attention"}


def feeds(dims, rows: int, past: int, prompt: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    heads, head_dim = dims.num_heads, dims.head_dim
    step = {
        "input_ids": rng.integers(3, dims.vocab_size, (rows, 1)).astype(np.int32),
        "position_ids": np.full((rows, 1), past, np.int32),
        "attention_mask": np.ones((rows, past + 1), np.int32),
    } | {f"past_{i}": rng.standard_normal((2, rows, heads, past, head_dim)).astype(np.float32)
         for i in range(dims.num_layers)}
    first = {
        "input_ids": rng.integers(3, dims.vocab_size, (rows, prompt)).astype(np.int32),
        "position_ids": np.tile(np.arange(prompt, dtype=np.int32), (rows, 1)),
        "attention_mask": np.ones((rows, prompt), np.int32),
    } | {f"past_{i}": np.zeros((2, rows, heads, 0, head_dim), np.float32) for i in range(dims.num_layers)}
    return {f"one-token step, past {past}": step, f"first step, {prompt}-token prompt": first}


def bench_shape(name: str, scratch: Path, rows: int, past: int, runs: int, threads: int) -> list[list[str]]:
    model_dir, params = build_biogpt(scratch / f"biogpt-{name}", SHAPES[name])
    loaded = load_decoder(model_dir)
    dims = loaded.dims
    paths = {"exported": export_decoder_onnx(loaded, scratch / f"{name}.onnx")}
    del loaded
    for variant, operator in VARIANTS.items():
        if operator:
            paths[variant] = scratch / f"{name}.{variant}.onnx"
            optimize_decoder(paths["exported"], paths[variant], dims, attention=operator)
    sessions = {variant: make_session(path, threads=threads) for variant, path in paths.items()}
    table = []
    for scenario, feed in feeds(dims, rows, past, prompt=10).items():
        reference = sessions["exported"].run(None, feed)
        for variant, session in sessions.items():
            out = session.run(None, feed)
            worst = max(float(np.abs(a - b).max()) for a, b in zip(out, reference, strict=True))
            if worst > 1e-3:
                raise SystemExit(f"{variant} differs from the exported decoder by {worst:g} ({scenario})")
        times: dict[str, list[float]] = {variant: [] for variant in sessions}
        for run in range(runs + 1):  # the first round warms up and is dropped
            for variant, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feed)
                if run:
                    times[variant].append(time.perf_counter() - start)
        base = statistics.median(times["exported"])
        for variant, seconds in times.items():
            median = statistics.median(seconds)
            table.append([f"{name} ({params / 1e6:.1f}M)", scenario, variant, f"{median * 1e3:.1f}",
                          f"{min(seconds) * 1e3:.1f}–{max(seconds) * 1e3:.1f}", f"{base / median:.2f}x"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description="genexport decoder-step benchmark (attention fusion)")
    parser.add_argument("--quick", action="store_true", help="tiny shape, 3 runs")
    parser.add_argument("--shapes", nargs="+", default=["mid", "base"], choices=sorted(SHAPES))
    parser.add_argument("--rows", type=int, default=4, help="decoder batch rows (batch x beams)")
    parser.add_argument("--past", type=int, default=24)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.runs = ["tiny"], 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="genexport-step-") as scratch:
        for shape in args.shapes:
            rows += bench_shape(shape, Path(scratch), args.rows, args.past, args.runs, args.threads)
    print(f"onnxruntime intra-op threads {args.threads}; {args.rows} decoder rows; medians of {args.runs} runs.\n")
    header = ["shape", "scenario", "decoder", "median ms", "min–max ms", "vs exported"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
