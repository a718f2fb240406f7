"""`export_generation`'s stages called one by one (gen_export.generation): each returns what the next takes."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from gen_export.errors import GenExportError, ParityError
from gen_export.generation import (
    GenerationRequest,
    SamplingAttributes,
    build_graph,
    plan_generation,
    prepare_decoder,
    verify_graph,
    write_generation_output,
)
from gen_export.manifest import read_manifest
from gen_export.options import SearchMode
from gen_export.progress import Steps
from gen_export.verify.parity import ParityReport

PROMPTS = ("the patient was treated with",)


def test_the_stages_run_alone_and_compose_into_an_export(tiny_biogpt: Path, tmp_path: Path) -> None:
    request = GenerationRequest(tiny_biogpt, tmp_path / "out", prompts=PROMPTS).validate()
    steps = Steps()
    plan = plan_generation(request, steps)
    assert plan.defaults.max_length == 64 and plan.graph.hf_spec is None and plan.graph.mode is SearchMode.BEAM
    assert plan.cases and {c.name for c in plan.cases} >= {"prompt 1", "beams 2, lp 0"}
    scratch = Path(tempfile.mkdtemp(dir=tmp_path))
    decoder = prepare_decoder(plan.loaded, scratch, steps, atol=request.atol)
    assert decoder.validation.passed and decoder.path.is_file() and decoder.fused_operators == {}
    graph = build_graph(plan.graph, decoder.path, scratch / "beam_search.onnx", steps)
    report = verify_graph(plan, graph, decoder.path, scratch, steps)
    assert isinstance(report, ParityReport) and report.passed and len(report.results) == len(plan.cases)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / graph.name).write_bytes(graph.read_bytes())
    write_generation_output(request, plan, staging, staging / graph.name, decoder, report, None)
    settings = read_manifest(staging).generation()
    assert settings.search.mode == "beam" and settings.generation_defaults.max_length == 64
    assert set(steps.timings) >= {"load checkpoint", "validate decoder against PyTorch"}

    # The verify stage fails on a graph that is not what the plan promised: one baked with no_repeat_ngram_size 1
    # (no token may repeat) cannot give generate's tokens.
    broken = replace(plan.graph, ort_spec=replace(plan.graph.ort_spec, no_repeat_ngram_size=1))
    bad_graph = build_graph(broken, decoder.path, scratch / "broken.onnx", steps)
    with pytest.raises(ParityError, match="parity case"):
        verify_graph(plan, bad_graph, decoder.path, scratch, steps)


def test_mode_settings_validate_themselves() -> None:
    SamplingAttributes(0.7, 0.9).validate(SearchMode.SAMPLING, None)
    with pytest.raises(GenExportError, match="only apply to sampling"):
        SamplingAttributes(temperature=0.7).validate(SearchMode.BEAM, None)
    with pytest.raises(GenExportError, match=r"top_p 1\.5 must be in"):
        SamplingAttributes(top_p=1.5).validate(SearchMode.SAMPLING, None)
    with pytest.raises(GenExportError, match="token-parity cases cannot be checked"):
        SamplingAttributes().validate(SearchMode.SAMPLING, [])
    with pytest.raises(TypeError, match="force must be a bool"):
        GenerationRequest(Path("m"), Path("o"), force="yes").validate()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="defaults must be a GenerationDefaults"):
        GenerationRequest(Path("m"), Path("o"), defaults={"num_beams": 4}).validate()  # type: ignore[arg-type]
