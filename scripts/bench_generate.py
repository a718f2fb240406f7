"""Generation speed, side by side in one process: PyTorch `generate`, an ONNX decoder driven by a Python
beam loop (optimum's ORTModelForCausalLM), and genexport's one-file BeamSearch graph.

Random-weight models are built by the script (BioGPT shapes; for the optimum contender a GPT-2 of the
same hidden size, layers, heads and vocabulary, since optimum has no BioGPT config). The optimum contender
needs the optional `[optimum-loop]` extra (optimum-onnx 0.1.0), which installs on the transformers 4.57 line
only: run it with .venv-tf4/bin/python; on the 5.x line the table goes without that row. Every contender
generates exactly the same number of tokens (min length = max length), runs alternate, and the table
shows medians with min/max, tokens per second, ratios to `generate`, and the fp32 weight-streaming
floor: parameter bytes / measured memory bandwidth, once per decoding step.

    .venv/bin/python scripts/bench_generate.py [--quick] [--shapes tiny mid base] [--batch 1 4]
        [--new-tokens 32 128] [--runs 3] [--threads 2] [--variants fp32 fp32-opt int8 int4] [--out benchmarks]

`hf-fp32` (in the default set) and `hf-fp32-opt` are `--rules transformers` graphs: generate's own search rules
in a standard-ONNX Loop around the same decoder (plain, or optimized as fp32-opt's).

Variants of the fused graph: fp32 (the exported decoder, with the first-step decoder that computes logits
for the last prompt position only), fp32-noinit (without it), fp32-opt (genexport's Attention fusion plus
onnxruntime's SkipLayerNormalization/BiasGelu), int8 (dynamic MatMul quantization) and int4
(MatMulNBits). Each fused variant's tokens are compared with `generate`'s and the fp32 graph's on the
benchmark's own inputs (the fp32 graph must equal `generate`: a speed table of a wrong graph means nothing).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BioGptConfig, BioGptForCausalLM, GPT2Config, GPT2LMHeadModel

from gen_export.demo import build_tokenizer
from gen_export.export.decoder import export_decoder_onnx, load_decoder
from gen_export.export.export_spec import DEFAULT_OPSET
from gen_export.generation import SearchGraphPlan
from gen_export.runtime import make_session
from gen_export.search.fusion import optimize_decoder
from gen_export.search.precision import quantize_decoder
from gen_export.search.search_graph import SearchGraphSpec, SearchMode

SHAPES = {
    "tiny": {"hidden": 64, "layers": 2, "heads": 4, "vocab": 400},
    "mid": {"hidden": 512, "layers": 6, "heads": 8, "vocab": 42384},
    "base": {"hidden": 1024, "layers": 24, "heads": 16, "vocab": 42384},
}
BEAMS = 4
#: Fused-graph variants: (precision, optimize the decoder first (genexport's Attention fusion plus onnxruntime's
#: SkipLayerNorm/BiasGelu), keep the logits MatMul in fp32, build the separate first-step decoder). int8/int4 are
#: what `genexport beam --precision` ships; the -all variants quantize the vocabulary projection too (fewer
#: bytes, less agreement); fp32-noinit is the fp32 graph without the first-step decoder, for comparison.
VARIANTS = {
    "fp32": ("fp32", False, True, True),
    "fp32-noinit": ("fp32", False, True, False),
    "fp32-opt": ("fp32", True, True, True),
    "int8": ("int8", False, True, True),
    "int4": ("int4", False, True, True),
    "int8-opt": ("int8", True, True, True),
    "int4-opt": ("int4", True, True, True),
    "int8-all": ("int8", False, False, True),
    "int4-all": ("int4", False, False, True),
}
FUSED = "genexport fused BeamSearch "
#: transformers-rules graphs (`--rules transformers`): the same decoder in a standard-ONNX Loop (optionally optimized).
HF_VARIANTS = {"hf-fp32": False, "hf-fp32-opt": True}
HF = "genexport transformers-rules Loop "


def contender_name(variant: str) -> str:
    return HF + variant.removeprefix("hf-") if variant in HF_VARIANTS else FUSED + variant


@dataclass
class Timing:
    contender: str
    shape: str
    batch: int
    new_tokens: int
    seconds: list[float]
    params: int
    #: Fused variants only: (identical sequences, sequences, identical tokens, tokens) against a reference.
    vs_generate: tuple[int, int, int, int] | None = None
    vs_fp32: tuple[int, int, int, int] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second of a large array copy (read + write), best of `repeats`."""
    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def build_biogpt(folder: Path, shape: dict[str, int]) -> tuple[Path, int]:
    build_tokenizer(folder)
    config = BioGptConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=4 * shape["hidden"],
        max_position_embeddings=512,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = BioGptForCausalLM(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder, sum(p.numel() for p in model.parameters())


OPTIMUM_LOOP = "optimum ORT + Python beam loop (GPT-2 same dims)"


def optimum_loop_available() -> bool:
    """The optimum-loop contender needs the optional `[optimum-loop]` extra (optimum-onnx 0.1.0), which installs
    on the transformers 4.57 line only (it caps transformers below 4.58); elsewhere the table goes without it."""
    import importlib.util

    import transformers

    return transformers.__version__.startswith("4.") and importlib.util.find_spec("optimum.onnxruntime") is not None


def build_gpt2_optimum(folder: Path, shape: dict[str, int]) -> Path:
    from optimum.exporters.onnx import main_export

    config = GPT2Config(
        vocab_size=shape["vocab"],
        n_embd=shape["hidden"],
        n_layer=shape["layers"],
        n_head=shape["heads"],
        n_positions=512,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(folder / "torch", safe_serialization=True)
    main_export(
        str(folder / "torch"), output=folder / "onnx", task="text-generation-with-past", do_validation=False
    )
    return folder / "onnx"


def build_graphs(model_dir: Path, folder: Path, variants: list[str]) -> dict[str, Path]:
    """One decoder export per shape, then each variant fused around its own (optimized/quantized) copy.

    The stages `export_generation` composes (decoder export, optimize/quantize, `generation.SearchGraphPlan`'s
    build), without its decoder validation and parity matrix (minutes at the base shape, per variant): the
    benchmark instead compares every fused graph's tokens with `generate`.
    """
    folder.mkdir(parents=True)
    loaded = load_decoder(model_dir)
    decoder = export_decoder_onnx(loaded, folder / "decoder.onnx", DEFAULT_OPSET)
    spec = SearchGraphSpec.for_model(SearchMode.BEAM, loaded.dims)
    dims = loaded.dims
    del loaded  # the PyTorch copy is loaded again for generate; two base-size copies are not needed
    graphs = {}
    # Each variant is built in a fresh process: at the base shape one convert_generation with the first-step
    # decoder peaks at ~13.5 GB, and a long-lived process does not hand that memory back between variants
    # (seven in a row were killed by the OOM killer on a 24 GB machine).
    context = multiprocessing.get_context("spawn")
    for variant in variants:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            graphs[variant] = pool.submit(_build_variant, model_dir, decoder, folder, variant, dims, spec).result()
    return graphs


def _build_variant(model_dir: Path, decoder: Path, folder: Path, variant: str, dims: Any,
                   spec: SearchGraphSpec) -> Path:
    if variant in HF_VARIANTS:
        from gen_export.search.hf_search import HfMode, HfSearchSpec

        source = decoder
        if HF_VARIANTS[variant]:
            source = folder / "decoder.hfopt.onnx"
            optimize_decoder(decoder, source, dims)
        hf_spec = HfSearchSpec(HfMode.BEAM, (dims.eos_token_id,), dims.pad_token_id, dims.vocab_size)
        return SearchGraphPlan(SearchMode.BEAM, model_dir, spec, hf_spec).build(source, folder / f"beam-{variant}.onnx")
    precision, optimize, keep_logits, init_decoder = VARIANTS[variant]
    source = decoder
    if optimize:
        source = folder / "decoder.opt.onnx"
        optimize_decoder(decoder, source, dims)
    if precision != "fp32":
        source = quantize_decoder(source, folder / f"decoder.{variant}.onnx", precision, keep_logits_fp32=keep_logits)
    # The same graph stage `export_generation` composes (generation.SearchGraphPlan), per variant.
    graph = SearchGraphPlan(SearchMode.BEAM, model_dir, replace(spec, init_decoder=init_decoder)).build(
        source, folder / f"beam-{variant}.onnx")
    for leftover in folder.glob("decoder.*.onnx"):
        leftover.unlink()  # 1.5 GB each at the base shape; the fused graph holds its own copy
    return graph


def agreement(rows: np.ndarray, reference: np.ndarray) -> tuple[int, int, int, int]:
    """Identical sequences and identical tokens of generated rows (same shapes: min length = max length)."""
    same_rows = int(np.all(rows == reference, axis=1).sum())
    return same_rows, rows.shape[0], int((rows == reference).sum()), rows.size


def bench_shape(
    name: str,
    batches: list[int],
    new_tokens: list[int],
    runs: int,
    scratch: Path,
    variants: list[str],
    threads: int,
) -> list[Timing]:
    shape = SHAPES[name]
    model_dir, params = build_biogpt(scratch / f"biogpt-{name}", shape)
    sessions = {
        variant: make_session(graph, threads=threads)
        for variant, graph in build_graphs(model_dir, scratch / f"graphs-{name}", variants).items()
    }
    model = BioGptForCausalLM.from_pretrained(model_dir).eval()
    ort_loop = None
    if optimum_loop_available():
        from optimum.onnxruntime import ORTModelForCausalLM

        ort_loop = ORTModelForCausalLM.from_pretrained(
            build_gpt2_optimum(scratch / f"gpt2-{name}", shape), use_cache=True, provider="CPUExecutionProvider"
        )
    results = []
    for batch in batches:
        generator = torch.Generator().manual_seed(batch)
        ids = torch.randint(3, shape["vocab"], (batch, 8), generator=generator)
        mask = torch.ones_like(ids)
        for new in new_tokens:
            total = ids.shape[1] + new
            kwargs = {
                "num_beams": BEAMS,
                "do_sample": False,
                "max_length": total,
                "min_length": total,
                "length_penalty": 0.0,
                "pad_token_id": 1,
                "eos_token_id": 2,
            }
            feed = {
                "input_ids": ids.numpy().astype(np.int32),
                "attention_mask": mask.numpy().astype(np.int32),
                "max_length": np.array([total], np.int32),
                "min_length": np.array([total], np.int32),
                "num_beams": np.array([BEAMS], np.int32),
                "num_return_sequences": np.array([1], np.int32),
                "length_penalty": np.array([0.0], np.float32),
                "repetition_penalty": np.array([1.0], np.float32),
            }
            contenders: dict[str, Callable[[], Any]] = {
                "torch generate": lambda kw=kwargs, i=ids, m=mask: model.generate(
                    input_ids=i, attention_mask=m, **kw
                ),
            }
            if ort_loop is not None:
                contenders[OPTIMUM_LOOP] = lambda kw=kwargs, i=ids, m=mask, loop=ort_loop: (
                    loop.generate(input_ids=i, attention_mask=m, **kw)
                )
            for variant, session in sessions.items():
                contenders[contender_name(variant)] = lambda f=feed, s=session: s.run(["sequences"], f)[0][:, 0, :]
            times: dict[str, list[float]] = {c: [] for c in contenders}
            outputs: dict[str, np.ndarray] = {}
            # Rounds alternate the contenders, so a burst of load from elsewhere hits all of them alike.
            for run in range(runs + 1):  # the first round warms up and is dropped
                for contender, call in contenders.items():
                    with torch.no_grad():
                        start = time.perf_counter()
                        out = call()
                        elapsed = time.perf_counter() - start
                    outputs[contender] = np.asarray(out)
                    if run:
                        times[contender].append(elapsed)
            generated = outputs["torch generate"][:, ids.shape[1] :]
            for contender, seconds in times.items():
                timing = Timing(contender, name, batch, new, seconds, params)
                if contender.startswith((FUSED, HF)):
                    rows = outputs[contender][:, ids.shape[1] :]
                    timing.vs_generate = agreement(rows, generated)
                    if FUSED + "fp32" in outputs:
                        timing.vs_fp32 = agreement(rows, outputs[FUSED + "fp32"][:, ids.shape[1] :])
                results.append(timing)
    return results


def _fraction(counts: tuple[int, int, int, int] | None) -> str:
    if counts is None:
        return "–"
    same_rows, rows, same_tokens, tokens = counts
    return f"{same_rows}/{rows} seq, {same_tokens / tokens:.0%} tok"


def table(results: list[Timing], bandwidth: float, threads: int, load: str) -> str:
    lines = [
        f"Threads: torch {threads}, onnxruntime intra-op {threads}; {BEAMS} beams; min length = max length; "
        f"memory bandwidth {bandwidth / 1e9:.1f} GB/s (array copy, read + write); load average before the "
        f"run: {load}.",
        "",
        "| shape | batch | new tokens | contender | median s | min–max s | tokens/s | vs generate | floor s "
        "| floor / median | same as generate | same as fp32 graph |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baseline = {
        (r.shape, r.batch, r.new_tokens): r.median for r in results if r.contender == "torch generate"
    }
    for r in results:
        floor = r.params * 4 / bandwidth * r.new_tokens
        base = baseline[(r.shape, r.batch, r.new_tokens)]
        lines.append(
            f"| {r.shape} ({r.params / 1e6:.1f}M) | {r.batch} | {r.new_tokens} | {r.contender} | "
            f"{r.median:.3f} | "
            f"{min(r.seconds):.3f}–{max(r.seconds):.3f} | {r.batch * r.new_tokens / r.median:.1f} | "
            f"{base / r.median:.2f}x | {floor:.3g} | {floor / r.median:.2f} | {_fraction(r.vs_generate)} | "
            f"{_fraction(r.vs_fp32)} |"
        )
    return "\n".join(lines)


def plot(results: list[Timing], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = sorted({(r.shape, r.batch, r.new_tokens) for r in results})
    contenders = list(dict.fromkeys(r.contender for r in results))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)) + 3.5, 4))
    width = 0.8 / len(contenders)
    for i, contender in enumerate(contenders):
        values = [
            next(
                r.median
                for r in results
                if (r.shape, r.batch, r.new_tokens) == g and r.contender == contender
            )
            for g in groups
        ]
        ax.bar([x + i * width for x in range(len(groups))], values, width, label=contender)
    ax.set_xticks([x + width * (len(contenders) - 1) / 2 for x in range(len(groups))])
    ax.set_xticklabels([f"{s}\nb{b} n{n}" for s, b, n in groups])
    ax.set_ylabel("seconds (median)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="genexport generation benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny shape, batch 1, 8 new tokens, 1 run")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "mid", "base"], choices=sorted(SHAPES))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--new-tokens", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads"
    )
    parser.add_argument(
        "--variants", "--precision", nargs="+", default=[*VARIANTS, "hf-fp32"], choices=[*VARIANTS, *HF_VARIANTS]
    )
    parser.add_argument("--out", type=Path, default=None, help="write generate.md (+ generate.png) here")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.batch, args.new_tokens, args.runs = ["tiny"], [1], [8], 1
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    bandwidth = memory_bandwidth()
    results: list[Timing] = []
    with tempfile.TemporaryDirectory() as scratch:
        for shape in args.shapes:
            results += bench_shape(
                shape, args.batch, args.new_tokens, args.runs, Path(scratch), args.variants, args.threads
            )
    text = table(results, bandwidth, args.threads, load)
    if not optimum_loop_available():
        text += ("\n\nThe optimum ORT + Python beam loop contender is left out: it needs the `[optimum-loop]` extra, "
                 "which installs on the transformers 4.57 line only (.venv-tf4).")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "generate.md").write_text("# Generation benchmark\n\n" + text + "\n")
        if plot(results, args.out / "generate.png"):
            print(f"wrote {args.out / 'generate.md'} and {args.out / 'generate.png'}")


if __name__ == "__main__":
    main()
