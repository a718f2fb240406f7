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


def test_embedding_stages_run_alone_and_a_wrong_graph_fails_verification(tmp_path: Path) -> None:
    """`export_embedding`'s stages one by one (gen_export.embed): prepare -> batch -> export -> verify -> write."""
    from fixtures_encoders import build_tiny_bert

    from gen_export.embed import (
        export_encoder,
        parity_batch,
        prepare_encoder,
        require_embedding_parity,
        verify_embedding,
        write_embedding_output,
    )

    model_dir = build_tiny_bert(tmp_path / "bert")
    prepared = prepare_encoder(model_dir, "mean", True)
    assert (prepared.pooling, prepared.normalize) == ("mean", True)
    batch = parity_batch(prepared)
    assert batch.expected.shape[0] == batch.mask.shape[0]
    assert abs(float(batch.expected[0] @ batch.expected[0]) - 1) < 1e-5  # normalized inside the wrapper
    graph = export_encoder(prepared, tmp_path / "embedding.onnx")
    figures = verify_embedding(prepared, batch, graph)
    require_embedding_parity(figures)
    assert figures[0].reference == "PyTorch" and figures[0].cosine_min > 0.99999

    # A graph built with another pooling must fail the same verification, naming the reference it missed.
    other = prepare_encoder(model_dir, "max", True)
    wrong = verify_embedding(prepared, batch, export_encoder(other, tmp_path / "max.onnx"))
    with pytest.raises(ParityError, match="differs from PyTorch"):
        require_embedding_parity(wrong)

    out = tmp_path / "staging"
    out.mkdir()
    (out / "embedding.onnx").write_bytes(graph.read_bytes())
    write_embedding_output(prepared, out, figures, [], min_cosine=0.99)
    manifest = read_manifest(out)
    assert manifest.command == "embed" and manifest.embedding().pooling == "mean"
    assert any((out / name).is_file() for name in ("vocab.txt", "tokenizer.json"))
