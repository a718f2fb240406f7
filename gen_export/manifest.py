"""The `genexport.json` manifest as types: what every genexport output records, read back the same way.

Every command writes one `Manifest`; its `settings` are the command's own settings type (`GenerationSettings`
for beam/greedy/sampling, `EmbeddingSettings`, `DecoderSettings`, `TritonSettings`, `DeploySettings`).
`Manifest.from_dict` checks the format version and the type of every typed field, so a hand-edited, foreign or
future manifest is a one-line `GenExportError` where it is read (`genexport info`, `run`, `triton`), not a
`KeyError` deep inside a writer. Reports (`validation`, `parity`) and checkpoint descriptions (`source`) are
recorded as they are and not read back by genexport, so they stay plain JSON objects.

This module imports nothing heavy: `genexport info` reads a manifest without torch or onnx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

from gen_export.errors import GenExportError

MANIFEST_NAME = "genexport.json"
#: The format genexport writes and reads. The document keeps the key it has had since version 1
#: (`genexport_manifest_version`); a change of shape bumps the number, and a reader refuses any other number.
FORMAT_VERSION = 1
VERSION_KEY = "genexport_manifest_version"

#: A JSON object recorded as written (reports, checkpoint descriptions): not read back by genexport.
JSONObject = dict[str, Any]


class ManifestFieldError(ValueError):
    """A field of a manifest document is missing or of the wrong type (`where` names it, e.g. settings.opset)."""


# --- Records ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactRecord:
    """One file of the output, hashed when the manifest is written."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class TensorRecord:
    """One graph input or output: name, element type and dims (int = static, str = named dynamic axis)."""

    name: str
    dtype: str
    dims: list[int | str]


@dataclass(frozen=True)
class GraphRecord:
    """The inputs and outputs of one ONNX file of the output (`runtime.graph_io`)."""

    inputs: list[TensorRecord]
    outputs: list[TensorRecord]

    def tensor(self, name: str) -> TensorRecord:
        found = next((t for t in [*self.inputs, *self.outputs] if t.name == name), None)
        if found is None:
            raise ManifestFieldError(f"graph has no tensor '{name}'")
        return found

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class RecordedDefaults:
    """`settings.generation_defaults`: the per-call defaults an export was proven with (resolved lengths)."""

    max_length: int
    min_length: int
    num_beams: int
    num_return_sequences: int
    length_penalty: float
    repetition_penalty: float
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None


@dataclass(frozen=True)
class SearchRecord:
    """`settings.search`: what is baked into the generation graph when it is built.

    The two graph families record different attributes (`search_graph.SearchGraphSpec` for onnxruntime's operator,
    `hf_search.HfSearchSpec` for transformers' rules); the ones every reader needs are typed here, the whole record
    is kept in `values` (written back unchanged, in its order).
    """

    mode: str
    eos_token_id: int
    pad_token_id: int
    vocab_size: int
    no_repeat_ngram_size: int
    values: JSONObject

    @classmethod
    def from_dict(cls, document: Any, where: str = "search") -> SearchRecord:
        if not isinstance(document, dict):
            raise ManifestFieldError(f"{where} is {type(document).__name__}, not an object")
        typed = {f.name: convert(document.get(f.name, 0 if f.name == "no_repeat_ngram_size" else _MISSING),
                                  _hints(cls)[f.name], f"{where}.{f.name}")
                 for f in dataclasses.fields(cls) if f.name != "values"}
        return cls(**typed, values=dict(document))

    def to_dict(self) -> JSONObject:
        return dict(self.values)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


# --- Settings per command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderSettings:
    """`genexport decoder`: the exported decoder and its onnxruntime-genai configuration."""

    opset: int
    atol: float
    dims: JSONObject
    genai: JSONObject


@dataclass(frozen=True)
class OptimizeRecord:
    enabled: bool
    fused_operators: dict[str, int]


@dataclass(frozen=True)
class GenerationSettings:
    """`genexport beam` (all three search modes, both rule families)."""

    opset: int
    atol: float
    #: `architectures.base.DecoderDims` as a JSON object (`max_positions` is read back).
    dims: JSONObject
    #: "onnxruntime" (the fused operator) or "transformers" (standard ONNX operators, generate's rules).
    rules: str
    search: SearchRecord
    #: What a caller feeds on every call, in the graph's order.
    graph_inputs: list[str]
    #: transformers rules: inputs with a default initializer, fed only by callers that name them.
    defaulted_inputs: list[str]
    generation_defaults: RecordedDefaults
    #: Per default: "cli", "generation_config.json" or "genexport default" (gen_export.gen_defaults).
    defaults_source: dict[str, str]
    precision: str
    quantized_matmuls: str
    optimize: OptimizeRecord
    #: Whether the graph holds the first-step decoder (logits for the last prompt position only).
    init_decoder: bool
    notes: list[str]

    @property
    def max_positions(self) -> int:
        value = self.dims.get("max_positions")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ManifestFieldError("settings.dims.max_positions is not an integer")
        return value


@dataclass(frozen=True)
class EmbeddingTokenizer:
    max_length: int
    padding: str
    truncation: bool
    padding_side: str


@dataclass(frozen=True)
class EmbeddingSettings:
    """`genexport embed`."""

    opset: int
    pooling: str
    normalize: bool
    sentence_transformers: JSONObject | None
    tokenizer: EmbeddingTokenizer
    inputs: list[TensorRecord]
    output: TensorRecord
    min_cosine: float


@dataclass(frozen=True)
class RequestLimits:
    max_texts: int
    max_text_bytes: int
    max_request_bytes: int


@dataclass(frozen=True)
class TritonSettings:
    """`genexport triton` (and `--triton-repo`): the marker in a model repository's root."""

    backend: str
    ensemble: str
    request_limits: RequestLimits


@dataclass(frozen=True)
class DeploySettings:
    """`genexport deploy`."""

    name: str
    model_repository: str
    pvc: str | None
    credentials_secret: str | None
    image: str
    autoscale_on: str
    replicas: list[int]
    server_args: list[str]
    sizing: JSONObject


Settings = DecoderSettings | GenerationSettings | EmbeddingSettings | TritonSettings | DeploySettings

#: The settings type of each command's manifest.
SETTINGS_TYPES: dict[str, type] = {
    "decoder": DecoderSettings,
    "beam": GenerationSettings,
    "greedy": GenerationSettings,
    "sampling": GenerationSettings,
    "embed": EmbeddingSettings,
    "triton": TritonSettings,
    "deploy": DeploySettings,
}


# --- The manifest ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """`OUT/genexport.json`: enough to reproduce and to audit an output, and what `triton`/`run` read back.

    Written by `artifacts.write_manifest` (which hashes the files and records the library versions); the
    document's keys are the field names, in this order, with `format_version` under `VERSION_KEY`.
    """

    command: str
    versions: dict[str, str]
    source: JSONObject
    artifacts: list[ArtifactRecord]
    graph: dict[str, GraphRecord]
    settings: Settings | JSONObject
    validation: JSONObject
    parity: JSONObject | None
    format_version: int = FORMAT_VERSION

    _ORDER: ClassVar[tuple[str, ...]] = ("command", "versions", "source", "artifacts", "graph", "settings",
                                         "validation", "parity")

    def to_dict(self) -> JSONObject:
        document: JSONObject = {VERSION_KEY: self.format_version}
        for name in self._ORDER:
            document[name] = _to_json(getattr(self, name))
        return document

    @classmethod
    def from_dict(cls, document: Any) -> Manifest:
        """Typed manifest from a parsed document; raises `ManifestFieldError` naming the first bad field."""
        if not isinstance(document, dict):
            raise ManifestFieldError(f"the document is {type(document).__name__}, not an object")
        version = convert(document.get(VERSION_KEY, _MISSING), int, VERSION_KEY)
        if version != FORMAT_VERSION:
            raise UnsupportedVersion(version)
        command = convert(document.get("command", _MISSING), str, "command")
        settings_type = SETTINGS_TYPES.get(command)
        hints = _hints(cls)
        values: dict[str, Any] = {"command": command}
        for name in cls._ORDER[1:]:
            hint = hints[name] if name != "settings" else (settings_type or JSONObject)
            values[name] = convert(document.get(name, _MISSING), hint, name)
        return cls(**values, format_version=version)

    def generation(self) -> GenerationSettings:
        return self._settings(GenerationSettings)

    def embedding(self) -> EmbeddingSettings:
        return self._settings(EmbeddingSettings)

    def _settings(self, kind: type[Any]) -> Any:
        if not isinstance(self.settings, kind):
            raise ManifestFieldError(f"a '{self.command}' manifest has no {kind.__name__}")
        return self.settings

    def main_graph(self) -> tuple[str, GraphRecord]:
        """The first graph recorded (the search graph of a generation export)."""
        if not self.graph:
            raise ManifestFieldError("graph is empty")
        name = next(iter(self.graph))
        return name, self.graph[name]


class UnsupportedVersion(ManifestFieldError):
    def __init__(self, version: Any) -> None:
        super().__init__(f"format version {version!r}")
        self.version = version


def read_manifest(folder: Path | str, purpose: str = "genexport") -> Manifest:
    """The typed manifest of a genexport output; a missing, unreadable, old, unknown or malformed one is a
    one-line `GenExportError`. `purpose` names the reader in that error ("a Triton repository")."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise GenExportError(f"{folder} has no {MANIFEST_NAME}", "point at a folder written by genexport")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as error:
        raise GenExportError(f"{path} is not readable JSON ({error.__class__.__name__})",
                             "point at a folder written by genexport, or export again") from None
    if not isinstance(document, dict) or not isinstance(document.get("command"), str):
        raise GenExportError(f"{path} is not a genexport manifest (no \"command\")",
                             "point at a folder written by genexport, or export again")
    try:
        return Manifest.from_dict(document)
    except UnsupportedVersion as error:
        raise GenExportError(
            f"{path} has manifest format version {error.version!r}; this genexport reads version {FORMAT_VERSION}",
            "export again with this genexport, or read it with the genexport version that wrote it "
            f"({_writer(document)})") from None
    except ManifestFieldError as error:
        raise GenExportError(f"{path} lacks what {purpose} needs ({error})",
                             "export again with genexport (the manifest must be the one it wrote)") from None


def _writer(document: dict[str, Any]) -> str:
    versions = document.get("versions")
    written_by = versions.get("genexport") if isinstance(versions, dict) else None
    return f"genexport {written_by}" if isinstance(written_by, str) else "unknown"


# --- Checked conversion between JSON and the types above ----------------------------------------------------

_MISSING: Any = object()


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(value: Any) -> str:
    return "missing" if value is _MISSING else f"{type(value).__name__} {json.dumps(value)[:40]}" if _jsonable(
        value) else type(value).__name__


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def convert(value: Any, hint: Any, where: str) -> Any:
    """`value` (parsed JSON, or an instance already typed) as `hint`, or `ManifestFieldError` naming `where`."""
    origin = typing.get_origin(hint)
    if hint is Any:
        if value is _MISSING:
            raise ManifestFieldError(f"{where} is missing")
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            with contextlib.suppress(ManifestFieldError):
                return convert(value, option, where)
        raise ManifestFieldError(f"{where} is {_describe(value)}, not {_name(hint)}")
    if value is _MISSING:
        raise ManifestFieldError(f"{where} is missing")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # already typed (a writer building its settings)
            return value
        if hasattr(hint, "from_dict") and hint is not Manifest:
            return hint.from_dict(value, where)
        if not isinstance(value, dict):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not an object")
        hints = _hints(hint)
        fields = {f.name: f for f in dataclasses.fields(hint) if f.init}
        unknown = set(value) - set(fields)
        if unknown:
            raise ManifestFieldError(f"{where} has unknown field(s) {sorted(unknown)}")
        converted = {}
        for name, spec in fields.items():
            if name not in value and (spec.default is not dataclasses.MISSING):
                continue
            converted[name] = convert(value.get(name, _MISSING), hints[name], f"{where}.{name}")
        return hint(**converted)
    if origin is list:
        if not isinstance(value, list):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not a list")
        (item,) = typing.get_args(hint)
        return [convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not an object")
        _, item = typing.get_args(hint)
        return {k: convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not true/false")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not an integer")
        return value
    if hint is float:
        # JSON has one number type: 1 and 1.0 are both a float setting (kept as written, so it writes back equal).
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not a number")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ManifestFieldError(f"{where} is {_describe(value)}, not a string")
        return value
    raise TypeError(f"no manifest conversion for {hint!r} ({where})")  # a programming error in this module


def _name(hint: Any) -> str:
    return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in typing.get_args(hint))


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return value.to_dict()
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def settings_from(command: str, values: JSONObject) -> Any:
    """A command's settings type built from the values it records (checked as on reading)."""
    kind = SETTINGS_TYPES.get(command)
    return convert(values, kind, "settings") if kind else values

