"""The typed manifest (gen_export.manifest): written and read back through the same types, byte for byte."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gen_export.artifacts import Manifest as ManifestWriter
from gen_export.cli import app
from gen_export.errors import GenExportError
from gen_export.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    VERSION_KEY,
    GenerationSettings,
    Manifest,
    ManifestFieldError,
    RecordedDefaults,
    RequestLimits,
    TritonSettings,
    read_manifest,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def generation_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gen_export.generation import export_generation

    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("manifest") / "beam", parity=False).output


def _write(folder: Path, document: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(document))
    return folder


def test_an_export_manifest_reads_back_typed_and_writes_back_byte_for_byte(generation_export: Path) -> None:
    text = (generation_export / MANIFEST_NAME).read_text()
    manifest = read_manifest(generation_export)
    assert manifest.format_version == FORMAT_VERSION == json.loads(text)[VERSION_KEY]
    settings = manifest.generation()
    assert isinstance(settings, GenerationSettings)
    assert isinstance(settings.generation_defaults, RecordedDefaults)
    assert settings.generation_defaults.num_beams == 4 and settings.generation_defaults.max_length == 64
    assert settings.search.mode == "beam" and settings.search.eos_token_id == 2 and settings.search.pad_token_id == 1
    assert settings.graph_inputs[0] == "input_ids" and settings.init_decoder is True
    name, graph = manifest.main_graph()
    assert name == "beam_search.onnx" and graph.tensor("sequences").dtype == "int32"
    assert {a.path for a in manifest.artifacts} >= {"beam_search.onnx", "tokenizer/vocab.json"}
    # The round trip loses nothing, and keeps the order of every key.
    assert json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n" == text
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_info_prints_the_manifest_it_read_through_the_types(generation_export: Path) -> None:
    result = runner.invoke(app, ["info", str(generation_export)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((generation_export / MANIFEST_NAME).read_text())


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_an_older_or_unknown_format_version_is_one_line_error(generation_export: Path, tmp_path: Path,
                                                              version: Any) -> None:
    document = json.loads((generation_export / MANIFEST_NAME).read_text())
    if version is None:
        del document[VERSION_KEY]
    else:
        document[VERSION_KEY] = version
    folder = _write(tmp_path / "old", document)
    with pytest.raises(GenExportError) as caught:
        read_manifest(folder)
    message = str(caught.value)
    assert "\n" not in message
    if isinstance(version, int):
        assert f"format version {version}; this genexport reads version {FORMAT_VERSION}" in message
        assert "read it with the genexport version that wrote it (genexport " in message
    else:
        assert VERSION_KEY in message
    result = runner.invoke(app, ["info", str(folder)])
    assert result.exit_code == 2 and str(folder / MANIFEST_NAME) in result.output


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("settings", "generation_defaults", "num_beams"), "4", "settings.generation_defaults.num_beams is str"),
    (("settings", "generation_defaults", "num_beams"), True,
     "settings.generation_defaults.num_beams is bool true, not an integer"),
    (("settings", "search", "eos_token_id"), 2.5, "settings.search.eos_token_id is float"),
    (("settings", "graph_inputs"), "input_ids", "settings.graph_inputs is str"),
    (("settings", "init_decoder"), 1, "settings.init_decoder is int 1, not true/false"),
    (("graph", "beam_search.onnx", "inputs", 0, "dims"), None, "graph.beam_search.onnx.inputs[0].dims is missing"),
    (("artifacts", 0, "bytes"), "12", "artifacts[0].bytes is str"),
    (("settings", "optimize", "typo"), 1, "settings.optimize has unknown field(s) ['typo']"),
])
def test_a_field_of_the_wrong_type_is_refused_naming_it(generation_export: Path, tmp_path: Path,
                                                        path: tuple[Any, ...], value: Any, expected: str) -> None:
    document = json.loads((generation_export / MANIFEST_NAME).read_text())
    Manifest.from_dict(copy.deepcopy(document))  # the untouched document reads
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(ManifestFieldError, match=re.escape(expected)):
        Manifest.from_dict(document)
    folder = _write(tmp_path / "bad", document)
    with pytest.raises(GenExportError, match="lacks what a Triton repository needs"):
        read_manifest(folder, purpose="a Triton repository")


def test_the_writer_refuses_settings_that_do_not_match_the_command_type(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    limits = RequestLimits(max_texts=16, max_text_bytes=1024, max_request_bytes=4096)
    path = ManifestWriter("triton", {"export": "x"}, settings=TritonSettings("python", "generator", limits)).write(
        tmp_path / "out")
    assert read_manifest(tmp_path / "out").settings == TritonSettings("python", "generator", limits)
    assert json.loads(path.read_text())["settings"] == {
        "backend": "python", "ensemble": "generator",
        "request_limits": {"max_texts": 16, "max_text_bytes": 1024, "max_request_bytes": 4096}}
    # A settings object as a dict is checked against the command's type the same way.
    with pytest.raises(TypeError, match=r"settings\.request_limits is missing"):
        ManifestWriter("triton", {"export": "x"}, settings={"backend": "python", "ensemble": "g"}).write(
            tmp_path / "out")
    # allow_nan=False is kept: a NaN never reaches a manifest.
    with pytest.raises(ValueError, match="Out of range float"):
        ManifestWriter("triton", {"export": float("nan")}, settings=TritonSettings("python", "g", limits)).write(
            tmp_path / "out")
