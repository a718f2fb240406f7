"""onnxruntime-genai beside genexport's fused search graph, on the same exported decoder.

A random-weight BioGPT of the given shape is exported once (`decoder.onnx` + `genai_config.json`, as
`genexport decoder` writes them); the fused GreedySearch / BeamSearch graphs are built around that same file.
Each contender generates exactly `--new-tokens` tokens (min length = max length), runs alternate, medians
with min-max are printed, and the tokens of both are compared (greedy; beam with length_penalty 0, where
genai's and onnxruntime's beam scoring agree).

    .venv/bin/python scripts/bench_genai.py [--shape mid] [--new-tokens 32] [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from bench_generate import SHAPES, build_biogpt

from gen_export.export.decoder import export_decoder_onnx, load_decoder
from gen_export.export.export_spec import DEFAULT_OPSET
from gen_export.export.genai import GENAI_CONFIG, write_genai_files
from gen_export.runtime import make_session
from gen_export.search.search_graph import SearchGraphSpec, SearchMode, build_search_graph

PROMPT_LENGTH = 12
BEAMS = 4


def genai_run(model: Any, ids: np.ndarray, total: int, beams: int) -> np.ndarray:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, num_beams=beams, max_length=total, min_length=total,
                              length_penalty=0.0, early_stopping=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids.astype(np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return np.array(generator.get_sequence(0))


def fused_run(session: Any, ids: np.ndarray, total: int, beams: int) -> np.ndarray:
    feed = {"input_ids": ids.astype(np.int32), "max_length": np.array([total], np.int32),
            "min_length": np.array([total], np.int32), "repetition_penalty": np.array([1.0], np.float32),
            "attention_mask": np.ones_like(ids, dtype=np.int32)}
    if beams > 1:
        feed |= {"num_beams": np.array([beams], np.int32), "num_return_sequences": np.array([1], np.int32),
                 "length_penalty": np.array([0.0], np.float32)}
    return session.run(["sequences"], feed)[0].reshape(-1, total)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import onnxruntime_genai as og

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model_dir, params = build_biogpt(root / "model", SHAPES[args.shape])
        out = root / "export"
        out.mkdir()
        loaded = load_decoder(model_dir)
        export_decoder_onnx(loaded, out / "decoder.onnx", DEFAULT_OPSET)
        dims = loaded.dims
        del loaded
        write_genai_files(model_dir, out, dims)
        config = json.loads((out / GENAI_CONFIG).read_text())  # same threads as the fused graph's session
        config["model"]["decoder"]["session_options"] |= {"intra_op_num_threads": args.threads,
                                                           "inter_op_num_threads": 1}
        (out / GENAI_CONFIG).write_text(json.dumps(config))
        genai_model = og.Model(str(out))
        rng = np.random.default_rng(0)
        ids = rng.integers(3, dims.vocab_size, (1, PROMPT_LENGTH))
        total = PROMPT_LENGTH + args.new_tokens
        for mode, beams in ((SearchMode.GREEDY, 1), (SearchMode.BEAM, BEAMS)):
            spec = SearchGraphSpec.for_model(mode, dims)
            graph = build_search_graph(model_dir, out / "decoder.onnx", root / f"{mode.value}.onnx", replace(spec))
            session = make_session(graph, threads=args.threads)
            contenders = {"onnxruntime-genai 0.18 (gpt2 type)": lambda b=beams: genai_run(genai_model, ids, total, b),
                          f"genexport fused {mode.value}": lambda s=session, b=beams: fused_run(s, ids, total, b)}
            outputs = {name: run() for name, run in contenders.items()}  # warm-up, and the tokens compared
            first, second = outputs.values()
            same = bool(np.array_equal(first, second))
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.runs):
                for name, run in contenders.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times[f"genexport fused {mode.value}"])
            for name, seconds in times.items():
                median = statistics.median(seconds)
                rows.append(f"| {args.shape} ({params / 1e6:.1f}M) | {mode.value} | {beams} | {args.new_tokens} | "
                            f"{name} | {median:.3f} | {min(seconds):.3f}–{max(seconds):.3f} | "
                            f"{args.new_tokens / median:.1f} | {median / base:.2f}x | {'yes' if same else 'NO'} |")
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Threads: intra-op {args.threads} for both; batch 1, prompt {PROMPT_LENGTH} tokens, min length = max "
          f"length; {args.runs} alternating runs; load average at the end {load}.\n")
    print("| shape | search | beams | new tokens | contender | median s | min–max s | tokens/s | time vs fused "
          "| same tokens |\n|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
