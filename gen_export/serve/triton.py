"""Triton Inference Server model repositories for genexport's outputs.

Generator: `<name>_tokenizer` (python) -> `<name>_generator` (the fused ONNX graph) ->
`<name>_detokenizer` (python), chained by the ensemble `<name>` (TEXT + optional parameters ->
GENERATED_TEXT, SCORES). Embedder: `<name>_tokenizer` -> `<name>_embedding` -> ensemble `<name>`
(TEXT -> embeddings), dynamically batched.

The ONNX models default to Triton's onnxruntime backend (the official containers); `backend="python"`
runs the same file with onnxruntime inside the python backend instead (for servers without the
onnxruntime backend, such as the one bundled in the nvidia-pytriton wheel that the tests use). Every
config.pbtxt is parsed into Triton's own `ModelConfig` message and the ensemble's maps are checked
against its members before the repository is moved into place.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sysconfig
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gen_export.artifacts import (
    MANIFEST_NAME,
    Manifest,
    check_output_target,
    copy_tokenizer_files,
    read_manifest,
    staged_output,
)
from gen_export.contract import GRAPH_INPUTS, REQUEST_PARAMETERS
from gen_export.errors import GenExportError
from gen_export.manifest import Manifest as ExportManifest
from gen_export.manifest import RequestLimits, TritonSettings
from gen_export.validate import require_bool, require_float, require_int, require_name, require_path

MODELS_DIR = Path(__file__).parent / "triton_models"
_DTYPES = {"int32": "TYPE_INT32", "int64": "TYPE_INT64", "float32": "TYPE_FP32", "string": "TYPE_STRING"}
#: Optional ensemble inputs of the generator, their Triton type and the graph input they feed.
#: Triton's type for each element type of a graph input (gen_export.contract.GRAPH_INPUTS).
_TRITON_TYPES = {"int32": "TYPE_INT32", "int64": "TYPE_INT64", "float32": "TYPE_FP32"}
#: The generator's optional request parameters: name -> (Triton type, the graph input it feeds), from the contract.
GENERATOR_PARAMETERS = {parameter: (_TRITON_TYPES[GRAPH_INPUTS[graph_input].dtype], graph_input)
                        for parameter, graph_input in REQUEST_PARAMETERS.items()}
DEFAULT_MAX_NEW_TOKENS = 32
#: Prompts per generator request; beam search holds prompts x beams sequences in memory at once.
DEFAULT_MAX_PROMPTS = 16
#: Bytes per text and per request: checked before tokenizing, so an oversized request cannot hold a model instance
#: (16 x 1 MB of text took ~30 s to tokenize). A prompt beyond a few KB exceeds any model's positions anyway.
DEFAULT_MAX_TEXT_BYTES = 32 * 1024
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024


@dataclass(frozen=True)
class TritonRepository:
    """A written repository: its folder, the ensemble clients call, and every model in it."""

    root: Path
    ensemble: str
    models: tuple[str, ...]
    backend: str


def _dims(dims: list[int | str]) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in dims) + " ]"


def _tensor(name: str, dtype: str, dims: str, optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    return f'  {{ name: "{name}" data_type: {dtype} dims: {dims}{extra} }}'


def _params(values: dict[str, Any]) -> str:
    items = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        items.append(f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(text)} }} }}')
    return "\n".join(items)


def _config(name: str, body: list[str], inputs: list[str], outputs: list[str], max_batch_size: int,
            extra: str = "") -> str:
    return "\n".join([
        f'name: "{name}"', *body, f"max_batch_size: {max_batch_size}",
        "input [", ",\n".join(inputs), "]", "output [", ",\n".join(outputs), "]", extra, "",
    ])


_HEADER = """# Written by genexport. Triton's python stub embeds libpython and ignores PYTHONPATH: the serving
# packages' folders (and this folder, for _common.py) go on sys.path before anything else is imported.
import os as _os
import sys as _sys

for _path in [*{paths!r}, _os.path.dirname(_os.path.abspath(__file__))]:
    if _path not in _sys.path:
        _sys.path.insert(0, _path)
# fmt: off
"""


def _python_model(folder: Path, template: str, tokenizer_from: Path | None, python_paths: list[str]) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    header = _HEADER.format(paths=list(python_paths))
    (version / "model.py").write_text(header + (MODELS_DIR / template).read_text())
    shutil.copy2(MODELS_DIR / "_common.py", version / "_common.py")
    if tokenizer_from is not None:
        copy_tokenizer_files(tokenizer_from, version / "tokenizer")


def default_python_paths() -> list[str]:
    """Where this interpreter's packages live: the python stub ignores PYTHONPATH, so configs name them."""
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def _onnx_model(folder: Path, onnx_file: Path, name: str, backend: str, inputs: list[str],
                outputs: list[str], output_names: list[str], max_batch_size: int, python_paths: list[str],
                extra: str = "") -> None:
    version = folder / "1"
    if backend == "python":
        _python_model(folder, "onnx_runner.py", None, python_paths)
        body = ['backend: "python"', _params({"outputs": output_names})]
    else:
        version.mkdir(parents=True)
        body = ['platform: "onnxruntime_onnx"']
    if backend == "python":  # the serving environment's own onnxruntime: the exported file as it is
        shutil.copy2(onnx_file, version / "model.onnx")
    else:
        copy_for_container_onnxruntime(onnx_file, version / "model.onnx")
    data = onnx_file.with_name(onnx_file.name + ".data")
    if data.is_file():  # external data keeps its file name, which the graph refers to
        shutil.copy2(data, version / data.name)
    instance = "instance_group [ { kind: KIND_CPU count: 1 } ]"
    (folder / "config.pbtxt").write_text(
        _config(name, body, inputs, outputs, max_batch_size, f"{instance}\n{extra}"))


# IR versions that need more than the opsets do: float8 types (IR 9), 4-bit ints (10), float4 (11).
_IR_FOR_TYPE = {17: 9, 18: 9, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11}
#: What the onnxruntime in the official Triton containers loads (25.03 ships onnxruntime 1.20.1: IR <= 10).
CONTAINER_MAX_IR_VERSION = 10


def _ir_needed_by_types(graph: Any) -> int:
    """The IR version the tensor element types in `graph` (and its subgraphs) need; 0 if nothing special."""
    import onnx

    types = [t.data_type for t in [*graph.initializer, *(s.values for s in graph.sparse_initializer)]]
    types += [v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]]
    needed = 0
    for node in graph.node:
        for attribute in node.attribute:
            tensors = [*attribute.tensors, *([attribute.t] if attribute.HasField("t") else [])]
            types += [t.data_type for t in tensors]
            for subgraph in [*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])]:
                needed = max(needed, _ir_needed_by_types(subgraph))
    for dtype in types:
        if dtype > max(_IR_FOR_TYPE):  # a type newer than this table: keep the exporter's IR version
            return onnx.IR_VERSION
        needed = max(needed, _IR_FOR_TYPE.get(dtype, 0))
    return needed


def copy_for_container_onnxruntime(onnx_file: Path, target: Path) -> int:
    """Copy an ONNX file, its IR version lowered to the least its opsets and types need; returns it.

    The exporters here stamp the newest IR version (the fused generation graph comes out as IR 14), which
    the older onnxruntime in the official Triton containers refuses ("Unsupported model IR version"). The IR
    version is a format stamp: lowering it to what the opsets declare changes no operator or weight.
    External data is not loaded: the references stay relative and the .data file is copied beside it.
    """
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    needed = max(onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True),
                 _ir_needed_by_types(model.graph))
    if model.ir_version <= needed:
        shutil.copy2(onnx_file, target)
        return int(model.ir_version)
    model.ir_version = needed
    onnx.save_model(model, str(target))
    return needed


def _ensemble(name: str, inputs: list[str], outputs: list[str], steps: list[tuple[str, dict[str, str],
              dict[str, str]]], max_batch_size: int) -> str:
    parts = []
    for model, input_map, output_map in steps:
        maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in input_map.items()]
        maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in output_map.items()]
        head = f'    {{\n      model_name: "{model}"\n      model_version: -1\n'
        parts.append(head + "\n".join(maps) + "\n    }")
    scheduling = "ensemble_scheduling {\n  step [\n" + ",\n".join(parts) + "\n  ]\n}"
    return _config(name, ['platform: "ensemble"'], inputs, outputs, max_batch_size, scheduling)


def check_request_limits(max_texts: Any, max_text_bytes: Any, max_request_bytes: Any) -> None:
    """The request limits a repository's tokenizer enforces before tokenizing anything."""
    require_int("texts per request", max_texts, 1, 4096, "--max-texts")
    require_int("bytes per text", max_text_bytes, 1, 64 << 20, "--max-text-bytes")
    require_int("bytes per request", max_request_bytes, 1, 1 << 30, "--max-request-bytes")


def _prepare(export_dir: Any, repo_dir: Any, backend: str, command: tuple[str, ...], name: Any,
             force: Any) -> tuple[Path, Path, str, ExportManifest]:
    """Arguments, then the export's manifest, then the repository folder: all checked before anything is written.

    The repository folder must not be, contain or lie inside the export it is made from.
    """
    export_dir = require_path("export_dir", export_dir)
    repo_dir = require_path("repo_dir", repo_dir)
    require_bool("force", force)
    name = require_name("name", name) or ("generator" if "beam" in command else "embedder")
    if backend not in ("onnxruntime", "python"):
        raise GenExportError(f"unknown Triton backend '{backend}'", "use --backend onnxruntime or python")
    manifest = read_manifest(export_dir, purpose="a Triton repository")
    if manifest.command not in command:
        raise GenExportError(
            f"{export_dir} holds a '{manifest.command}' export, not one of {', '.join(command)}",
            "point at the output folder of the matching genexport command",
        )
    check_output_target(repo_dir, force, model_dirs=(export_dir,))  # not the export, nor a folder containing it
    if repo_dir.expanduser().resolve().is_relative_to(export_dir.expanduser().resolve()):
        raise GenExportError(f"the Triton repository {repo_dir} lies inside the export {export_dir}",
                             "write the repository to a folder outside the export")
    return export_dir, repo_dir, name, manifest


@contextlib.contextmanager
def _manifest_reads(export_dir: Path) -> Iterator[None]:
    """Reads of an export's manifest: a hand-edited or foreign one is a one-line error, not a KeyError."""
    try:
        yield
    except (KeyError, TypeError, IndexError, StopIteration, AttributeError, ValueError) as error:
        raise GenExportError(f"{export_dir / MANIFEST_NAME} lacks what a Triton repository needs ({error!r})",
                             "export again with genexport (the manifest must be the one it wrote)") from None


def _write_marker(root: Path, export_dir: Path, manifest: ExportManifest, settings: TritonSettings) -> None:
    """genexport.json in the repository root: the marker that lets --force replace it later (and `info` read
    it). Triton ignores files at the top of a model repository."""
    Manifest(command="triton", source={"export": str(export_dir.resolve()), "export_command": manifest.command,
                                       "export_source": manifest.source},
             settings=settings).write(root)


def write_generator_repository(
    export_dir: Path, repo_dir: Path, *, name: str | None = None, backend: str = "onnxruntime",
    force: bool = False, python_paths: list[str] | None = None, max_prompts: int = DEFAULT_MAX_PROMPTS,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> TritonRepository:
    """Tokenizer -> fused generation graph -> detokenizer, and the ensemble that chains them.

    The mode (beam, greedy, sampling) and the graph's inputs come from the export's manifest: an
    ensemble parameter exists only where the graph has the input it feeds. `max_prompts` caps the
    prompts per request (the graph is unbatchable for Triton, so max_batch_size cannot); `python_paths`
    are put on sys.path by every model.py (default: this interpreter's site-packages).
    """
    check_request_limits(max_prompts, max_text_bytes, max_request_bytes)
    export_dir, repo_dir, name, manifest = _prepare(export_dir, repo_dir, backend, ("beam", "greedy", "sampling"),
                                                    name, force)
    with _manifest_reads(export_dir):
        settings = manifest.generation()
        graph_name, io = manifest.main_graph()
        graph_inputs: list[str] = list(settings.graph_inputs)
        defaults = asdict(settings.generation_defaults)
        eos_token_id, pad_token_id = settings.search.eos_token_id, settings.search.pad_token_id
        max_positions = settings.max_positions
        outputs = io.output_names
        # Each graph tensor as a member config entry, with the graph's own dtype and dims (a mismatch would fail
        # at load time); "sequences" feeds the detokenizer.
        declared = {n: _tensor(n, _DTYPES[io.tensor(n).dtype], _dims(io.tensor(n).dims))
                    for n in [*graph_inputs, *outputs, "sequences"]}
        sequences_dims = _dims(io.tensor("sequences").dims)
    _check_served_defaults(defaults, export_dir)
    paths = python_paths if python_paths is not None else default_python_paths()
    request_defaults = {
        "MAX_NEW_TOKENS": DEFAULT_MAX_NEW_TOKENS, "MIN_NEW_TOKENS": 0, "NUM_BEAMS": defaults["num_beams"],
        "NUM_RETURN_SEQUENCES": defaults["num_return_sequences"],
        "LENGTH_PENALTY": defaults["length_penalty"],
        "REPETITION_PENALTY": defaults["repetition_penalty"], "SEED": -1,
    }
    parameters = [p for p, (_, graph_input) in GENERATOR_PARAMETERS.items() if graph_input in graph_inputs]
    tokenizer_model, generator_model, detokenizer_model = (
        f"{name}_tokenizer", f"{name}_generator", f"{name}_detokenizer")

    graph_tensor = declared.__getitem__

    with staged_output(repo_dir, force, model_dirs=(export_dir,)) as root:
        # Tokenizer: TEXT + optional parameters -> every graph input.
        _python_model(root / tokenizer_model, "generator_tokenizer.py", export_dir / "tokenizer", paths)
        tok_inputs = [_tensor("TEXT", "TYPE_STRING", "[ -1 ]")]
        tok_inputs += [_tensor(p, GENERATOR_PARAMETERS[p][0], "[ 1 ]", optional=True) for p in parameters]
        tok_outputs = [graph_tensor(n) for n in graph_inputs]
        (root / tokenizer_model / "config.pbtxt").write_text(_config(
            tokenizer_model, ['backend: "python"', _params({
                "defaults": request_defaults, "graph_inputs": graph_inputs, "max_prompts": str(max_prompts),
                "max_text_bytes": str(max_text_bytes), "max_request_bytes": str(max_request_bytes),
                "max_positions": str(max_positions)})],
            tok_inputs, tok_outputs, 0, "instance_group [ { kind: KIND_CPU count: 1 } ]"))
        # Generator: the one-file graph; [1]-shaped scalar inputs make it unbatchable (max_batch_size 0).
        _onnx_model(root / generator_model, export_dir / graph_name, generator_model, backend,
                    [graph_tensor(n) for n in graph_inputs], [graph_tensor(n) for n in outputs], outputs, 0,
                    paths)
        # Detokenizer: sequences + the padded prompt -> text.
        _python_model(root / detokenizer_model, "generator_detokenizer.py", export_dir / "tokenizer",
                      paths)
        (root / detokenizer_model / "config.pbtxt").write_text(_config(
            detokenizer_model, ['backend: "python"', _params({
                "eos_token_id": str(eos_token_id), "pad_token_id": str(pad_token_id)})],
            [_tensor("sequences", "TYPE_INT32", sequences_dims),
             _tensor("input_ids", "TYPE_INT32", "[ -1, -1 ]")],
            [_tensor("GENERATED_TEXT", "TYPE_STRING", "[ -1, -1 ]")], 0,
            "instance_group [ { kind: KIND_CPU count: 1 } ]"))
        # Ensemble. Internal tensors are prefixed "_"; beam search's scores leave the ensemble as SCORES.
        ens_outputs = [_tensor("GENERATED_TEXT", "TYPE_STRING", "[ -1, -1 ]")]
        generator_outputs = {"sequences": "_sequences"}
        if "sequences_scores" in outputs:
            ens_outputs.append(_tensor("SCORES", "TYPE_FP32", "[ -1, -1 ]"))
            generator_outputs["sequences_scores"] = "SCORES"
        steps = [
            (tokenizer_model, {"TEXT": "TEXT", **{p: p for p in parameters}},
             {n: f"_{n}" for n in graph_inputs}),
            (generator_model, {n: f"_{n}" for n in graph_inputs}, generator_outputs),
            (detokenizer_model, {"sequences": "_sequences", "input_ids": "_input_ids"},
             {"GENERATED_TEXT": "GENERATED_TEXT"}),
        ]
        (root / name).mkdir()
        (root / name / "1").mkdir()
        (root / name / "config.pbtxt").write_text(_ensemble(name, tok_inputs, ens_outputs, steps, 0))
        (root / "README.md").write_text(_generator_readme(name, parameters, request_defaults, max_prompts,
                                                          max_text_bytes, max_request_bytes))
        validate_repository(root)
        _write_marker(root, export_dir, manifest, TritonSettings(backend, name, RequestLimits(
            max_texts=max_prompts, max_text_bytes=max_text_bytes, max_request_bytes=max_request_bytes)))
    return TritonRepository(Path(repo_dir).resolve(), name,
                            (tokenizer_model, generator_model, detokenizer_model, name), backend)


def write_embedding_repository(
    export_dir: Path, repo_dir: Path, *, name: str | None = None, backend: str = "onnxruntime",
    force: bool = False, python_paths: list[str] | None = None, max_batch_size: int = 32,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> TritonRepository:
    """Tokenizer -> embedding graph, chained by an ensemble; dynamic batching on both members.

    `max_batch_size` (texts per batch, default 32) bounds what the dynamic batcher gathers and what one
    request may send; Triton itself rejects a larger request.
    """
    check_request_limits(max_batch_size, max_text_bytes, max_request_bytes)
    export_dir, repo_dir, name, manifest = _prepare(export_dir, repo_dir, backend, ("embed",), name, force)
    with _manifest_reads(export_dir):
        settings = manifest.embedding()
        inputs = [spec.name for spec in settings.inputs]
        out_dims = "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in settings.output.dims[1:]) + " ]"
        max_length = settings.tokenizer.max_length
    paths = python_paths if python_paths is not None else default_python_paths()
    tokenizer_model, embedding_model = f"{name}_tokenizer", f"{name}_embedding"
    batching = "dynamic_batching { max_queue_delay_microseconds: 2000 }"
    with staged_output(repo_dir, force, model_dirs=(export_dir,)) as root:
        _python_model(root / tokenizer_model, "embedding_tokenizer.py", export_dir, paths)
        (root / tokenizer_model / "config.pbtxt").write_text(_config(
            tokenizer_model, ['backend: "python"', _params({
                "max_length": str(max_length), "outputs": inputs, "max_texts": str(max_batch_size),
                "max_text_bytes": str(max_text_bytes), "max_request_bytes": str(max_request_bytes)})],
            [_tensor("TEXT", "TYPE_STRING", "[ 1 ]")],
            [_tensor(n, "TYPE_INT64", "[ -1 ]") for n in inputs], max_batch_size,
            f"instance_group [ {{ kind: KIND_CPU count: 1 }} ]\n{batching}"))
        _onnx_model(root / embedding_model, export_dir / "embedding.onnx", embedding_model, backend,
                    [_tensor(n, "TYPE_INT64", "[ -1 ]") for n in inputs],
                    [_tensor("embeddings", "TYPE_FP32", out_dims)], ["embeddings"], max_batch_size, paths,
                    batching)
        steps = [
            (tokenizer_model, {"TEXT": "TEXT"}, {n: f"_{n}" for n in inputs}),
            (embedding_model, {n: f"_{n}" for n in inputs}, {"embeddings": "embeddings"}),
        ]
        (root / name).mkdir()
        (root / name / "1").mkdir()
        (root / name / "config.pbtxt").write_text(_ensemble(
            name, [_tensor("TEXT", "TYPE_STRING", "[ 1 ]")], [_tensor("embeddings", "TYPE_FP32", out_dims)],
            steps, max_batch_size))
        validate_repository(root)
        _write_marker(root, export_dir, manifest, TritonSettings(backend, name, RequestLimits(
            max_texts=max_batch_size, max_text_bytes=max_text_bytes, max_request_bytes=max_request_bytes)))
    return TritonRepository(Path(repo_dir).resolve(), name, (tokenizer_model, embedding_model, name), backend)


def load_configs(root: Path) -> dict[str, Any]:
    """Every config.pbtxt under `root`, parsed into Triton's `ModelConfig` (typos and bad fields fail)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    configs = {}
    for path in sorted(root.glob("*/config.pbtxt")):
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise GenExportError(f"{path} is not a valid Triton ModelConfig ({error})",
                                 "report this as a genexport bug") from None
        if config.name != path.parent.name:
            raise GenExportError(f"{path} names model '{config.name}' in folder '{path.parent.name}'",
                                 "report this as a genexport bug")
        configs[config.name] = config
    return configs


def validate_repository(root: Path) -> None:
    """Schema-check every config and every ensemble map against the member models' configs."""
    configs = load_configs(root)
    for config in configs.values():
        if config.platform != "ensemble":
            continue
        produced = {t.name for t in config.input}
        for step in config.ensemble_scheduling.step:
            member = configs.get(step.model_name)
            if member is None:
                raise GenExportError(f"ensemble {config.name} calls unknown model {step.model_name}",
                                     "report this as a genexport bug")
            member_inputs = {t.name: t for t in member.input}
            for key, value in step.input_map.items():
                if key not in member_inputs:
                    raise GenExportError(f"{step.model_name} has no input {key}",
                                         "report this as a genexport bug")
                if value not in produced:
                    raise GenExportError(
                        f"ensemble {config.name} feeds {key} from {value}, which nothing produces",
                        "report this as a genexport bug")
            required = {n for n, t in member_inputs.items() if not t.optional}
            if missing := required - set(step.input_map):
                raise GenExportError(
                    f"ensemble {config.name} leaves {step.model_name} inputs {sorted(missing)} unfed",
                    "report this as a genexport bug")
            member_outputs = {t.name for t in member.output}
            for key, value in step.output_map.items():
                if key not in member_outputs:
                    raise GenExportError(f"{step.model_name} has no output {key}",
                                         "report this as a genexport bug")
                produced.add(value)
        for output in config.output:
            if output.name not in produced:
                raise GenExportError(f"ensemble {config.name} output {output.name} is never produced",
                                     "report this as a genexport bug")


def _check_served_defaults(defaults: dict[str, Any], export_dir: Path) -> None:
    """An export whose defaults no request could be served with (0 returned sequences, NaN penalties) is refused
    here, before a repository that rejects every default request is written."""
    try:
        beams = require_int("num_beams", defaults["num_beams"], 1, 128)
        require_int("num_return_sequences", defaults["num_return_sequences"], 1, beams)
        require_float("length_penalty", defaults["length_penalty"], -100.0, 100.0)
        require_float("repetition_penalty", defaults["repetition_penalty"], 0.0, 100.0, low_open=True)
    except (GenExportError, TypeError, KeyError) as error:
        raise GenExportError(f"the generation defaults in {export_dir / MANIFEST_NAME} cannot be served "
                             f"({error})", "export again with valid generation defaults") from None


def _generator_readme(name: str, parameters: list[str], defaults: dict[str, Any], max_prompts: int,
                      max_text_bytes: int, max_request_bytes: int) -> str:
    rows = "\n".join(f"| `{p}` | {defaults[p]} |" for p in parameters)
    return f"""# Triton model repository for `{name}` (written by genexport)

Send `TEXT` (BYTES, one string per prompt) to the ensemble `{name}`; it returns `GENERATED_TEXT`
(BYTES, [prompts, returned sequences]) and, for beam search, `SCORES`. At most {max_prompts} prompts
per request (the generation graph is not batchable by Triton: `max_batch_size: 0`), {max_text_bytes} bytes
per prompt and {max_request_bytes} bytes in all; larger requests are refused (HTTP 400) before tokenizing.
Optional [1]-shaped inputs:

| input | default |
|---|---|
{rows}

`MAX_NEW_TOKENS`/`MIN_NEW_TOKENS` count tokens after the (left-padded) prompt. For sampling graphs,
`SEED` < 0 (the default) draws a fresh seed per request; a fixed `SEED` >= 0 repeats its draws
(onnxruntime treats seed 0 like "no seed", so 0 is as fixed as any other value).
"""
