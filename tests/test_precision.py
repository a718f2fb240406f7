"""--precision: quantized decoders inside the fused graph, measured against the fp32 graph."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from gen_export.cli import app
from gen_export.decoder import export_decoder_onnx, load_decoder
from gen_export.errors import GenExportError
from gen_export.generation import export_generation
from gen_export.precision import Precision, quantize_decoder


def _decoder_ops(graph: Path) -> set[str]:
    model = onnx.load(str(graph))
    decoder = next(a.g for a in model.graph.node[0].attribute if a.name == "decoder")
    return {n.op_type for n in decoder.node}


def _logits_producer(decoder: Path) -> str:
    """The op type of the node computing logits, looking through a Reshape."""
    nodes = onnx.load(str(decoder)).graph.node
    producers = {o: n for n in nodes for o in n.output}
    node = producers["logits"]
    while node.op_type == "Reshape":
        node = producers[node.input[0]]
    return node.op_type


@pytest.mark.parametrize(("precision", "op", "optimize"),
                         [("int8", "MatMulInteger", False), ("int4", "MatMulNBits", False),
                          ("int8", "MatMulInteger", True)])
def test_quantized_graph_is_measured_against_fp32(tiny_biogpt: Path, tmp_path: Path, precision: str,
                                                  op: str, optimize: bool) -> None:
    result = export_generation(tiny_biogpt, tmp_path / precision, precision=Precision(precision),
                               optimize=optimize)
    ops = _decoder_ops(result.graph_onnx)
    assert ("MultiHeadAttention" in ops) is optimize  # quantized after fusion: q/k/v MatMuls stay MatMuls
    assert op in ops or (precision == "int8" and "DynamicQuantizeMatMul" in ops), ops
    manifest = json.loads(result.manifest.read_text())
    assert manifest["settings"]["precision"] == precision
    agreement = manifest["parity"]["agreement_with_fp32"]
    assert agreement["sequences"] > 0 and 0.0 <= agreement["sequence_agreement"] <= 1.0
    assert 0.0 <= agreement["token_agreement"] <= 1.0
    assert result.parity is not None and result.parity.passed  # the fp32 graph still proves the export
    assert any(note.startswith(f"{precision}: ") for note in result.notes)


def test_fp32_graph_has_no_quantized_ops(tiny_biogpt: Path, tmp_path: Path) -> None:
    result = export_generation(tiny_biogpt, tmp_path / "fp32", parity=False)
    assert not {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulNBits"} & _decoder_ops(result.graph_onnx)


def test_fp16_refused_on_cpu(tiny_biogpt: Path, tmp_path: Path) -> None:
    with pytest.raises(GenExportError, match="fp16 needs CUDA"):
        export_generation(tiny_biogpt, tmp_path / "o", precision=Precision.FP16)
    assert not (tmp_path / "o").exists()
    out = CliRunner().invoke(app, ["beam", str(tiny_biogpt), "--output", str(tmp_path / "o"),
                                   "--precision", "int3"])
    assert out.exit_code == 2 and "unknown precision 'int3'" in out.output


@pytest.mark.parametrize(("precision", "op"), [("int8", "MatMulInteger"), ("int4", "MatMulNBits")])
def test_keep_logits_fp32_leaves_only_the_vocabulary_projection(tiny_biogpt: Path, tmp_path: Path,
                                                                 precision: str, op: str) -> None:
    decoder = export_decoder_onnx(load_decoder(tiny_biogpt), tmp_path / "decoder.onnx", 17)
    quantized = quantize_decoder(decoder, tmp_path / "all.onnx", precision, keep_logits_fp32=False)
    kept = quantize_decoder(decoder, tmp_path / "kept.onnx", precision)  # a plain str is accepted
    assert _logits_producer(quantized) != "MatMul"
    assert _logits_producer(kept) == "MatMul"
    ops = {n.op_type for n in onnx.load(str(kept)).graph.node}
    assert op in ops or "DynamicQuantizeMatMul" in ops  # the other MatMuls are still quantized


def test_optimized_fp32_graph_passes_parity(tiny_biogpt: Path, tmp_path: Path) -> None:
    result = export_generation(tiny_biogpt, tmp_path / "opt", optimize=True)
    assert result.parity is not None and result.parity.passed
    assert result.parity.counts()["match"] == len(result.parity.results)
    model = onnx.load(str(result.graph_onnx))
    decoder = next(a.g for a in model.graph.node[0].attribute if a.name == "decoder")
    ops = [n.op_type for n in decoder.node]
    assert "SkipLayerNormalization" in ops and "BiasGelu" in ops, ops
    # genexport's own fusion: one MultiHeadAttention per layer, reading the halves of past_i and feeding present_i.
    attention = [n for n in decoder.node if n.op_type == "MultiHeadAttention"]
    assert len(attention) == 2
    producers = {o: n for n in decoder.node for o in n.output}
    for layer, node in enumerate(attention):
        assert {producers[node.input[i]].input[0] for i in (6, 7)} == {f"past_{layer}"}
        stack = producers[f"present_{layer}"]
        assert [producers[i].input[0] for i in stack.input] == list(node.output[1:3])
    assert "Softmax" not in ops and "ScatterND" not in ops  # the unfused attention and mask are gone
    manifest = json.loads(result.manifest.read_text())
    fused = manifest["settings"]["optimize"]
    assert fused["enabled"] and fused["fused_operators"]["MultiHeadAttention"] == 2
    assert manifest["settings"]["init_decoder"] is True


def test_init_decoder_only_below_the_size_limit(tiny_biogpt: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Large decoders skip the first-step decoder (memory); the manifest says which one was built."""
    from gen_export import search_graph

    monkeypatch.setattr(search_graph, "INIT_DECODER_MAX_BYTES", 1)
    result = export_generation(tiny_biogpt, tmp_path / "big", parity=False)
    model = onnx.load(str(result.graph_onnx))
    assert [a.name for a in model.graph.node[0].attribute if a.type == a.GRAPH] == ["decoder"]
    assert json.loads(result.manifest.read_text())["settings"]["init_decoder"] is False
