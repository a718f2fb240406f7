"""`genexport decoder`: the GPT-2-contract graph, its validation, and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from gen_export.artifacts import sha256_file
from gen_export.export.decoder import export_decoder, load_decoder, validate_decoder


@pytest.fixture(scope="module")
def exported(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_decoder(tiny_biogpt, tmp_path_factory.mktemp("dec") / "out")


def test_graph_meets_ort_gpt2_contract(exported) -> None:
    model = onnx.load(str(exported.decoder_onnx))
    dims = exported.dims
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    expected_inputs = ["input_ids", "position_ids", "attention_mask"] + [f"past_{i}" for i in range(dims.num_layers)]
    assert [i.name for i in model.graph.input] == expected_inputs
    assert [o.name for o in model.graph.output] == ["logits"] + [f"present_{i}" for i in range(dims.num_layers)]
    for name in ("input_ids", "position_ids", "attention_mask"):
        assert inputs[name].elem_type == onnx.TensorProto.INT32
    past = [d.dim_value or d.dim_param for d in inputs["past_0"].shape.dim]
    assert past == [2, "batch_size", dims.num_heads, "past_sequence_length", dims.head_dim]
    present = [d.dim_value or d.dim_param for d in outputs["present_0"].shape.dim]
    assert present == [2, "batch_size", dims.num_heads, "total_sequence_length", dims.head_dim]
    assert outputs["logits"].shape.dim[2].dim_value == dims.vocab_size


def test_validation_covers_three_scenarios_within_tolerance(exported) -> None:
    v = exported.validation
    assert v.checker and v.ort_gpt2_subgraph
    names = [c.name for c in v.cases]
    assert any("empty past" in n for n in names)
    assert any("with past" in n for n in names)
    assert any("left-padded" in n for n in names)
    for case in v.cases:
        assert case.passed, case
        assert case.logits_max_abs < 1e-5 and case.present_max_abs < 1e-5, case  # seen: ~2e-6


def test_validation_detects_a_different_model(exported, tiny_biogpt: Path) -> None:
    """The validation must be able to fail: perturb PyTorch weights, keep the exported graph."""
    loaded = load_decoder(tiny_biogpt)
    with torch.no_grad():
        loaded.model.biogpt.layers[0].fc1.weight.add_(0.05)
    validation = validate_decoder(loaded, exported.decoder_onnx)
    assert not validation.passed
    assert max(c.logits_max_abs for c in validation.cases) > 1e-3


def test_manifest_records_hashes_versions_and_io(exported, tiny_biogpt: Path) -> None:
    manifest = json.loads(exported.manifest.read_text())
    assert manifest["command"] == "decoder"
    artifact = {a["path"]: a for a in manifest["artifacts"]}["decoder.onnx"]
    assert artifact["sha256"] == sha256_file(exported.decoder_onnx)
    assert manifest["source"]["architecture"] == "BioGptForCausalLM"
    assert len(manifest["source"]["weights_sha256"]) == 64
    assert manifest["versions"]["onnxruntime"].startswith("1.32")
    assert manifest["validation"]["decoder"]["passed"] is True
    io = manifest["graph"]["decoder.onnx"]
    assert io["inputs"][0] == {"name": "input_ids", "dtype": "int32", "dims": ["batch_size", "sequence_length"]}
