"""Triton repositories: schema-checked configs, and a real tritonserver answering over HTTP and gRPC."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from gen_export.errors import GenExportError
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.runtime import make_session
from gen_export.triton import load_configs, validate_repository, write_embedding_repository, write_generator_repository

PROMPTS = ["the patient was treated with", "mutations in tp53 cause", "expression of egfr was reduced in"]
SENTENCES = ["Kidneys filter blood.", "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase in the liver."]
NP_TYPES = {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_FP32": np.float32}


@pytest.fixture(scope="module")
def generator_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory):
    defaults = GenerationDefaults(num_beams=4, length_penalty=0.0)  # where generate and the op agree exactly
    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("gen") / "out", defaults=defaults)


@pytest.fixture(scope="module")
def embedding_export(tmp_path_factory: pytest.TempPathFactory):
    from gen_export.embed import export_embedding

    return export_embedding(None, tmp_path_factory.mktemp("emb") / "out")


@pytest.fixture(scope="module")
def repositories(generator_export, embedding_export, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("repos")
    return {
        "gen_python": write_generator_repository(generator_export.output, root / "gen_py", backend="python"),
        "emb_python": write_embedding_repository(embedding_export.output, root / "emb_py", backend="python"),
        "gen_ort": write_generator_repository(generator_export.output, root / "gen_ort"),
        "emb_ort": write_embedding_repository(embedding_export.output, root / "emb_ort"),
    }


@pytest.fixture(scope="module")
def server(repositories: dict[str, Any]):
    from gen_export.triton_server import bundled_triton_server

    with bundled_triton_server([repositories["gen_python"].root, repositories["emb_python"].root]) as running:
        yield running


def test_every_config_parses_as_triton_model_config(repositories: dict[str, Any]) -> None:
    for repository in repositories.values():
        configs = load_configs(repository.root)
        assert set(configs) == set(repository.models)
        validate_repository(repository.root)
    gen = load_configs(repositories["gen_ort"].root)
    assert gen["generator_generator"].platform == "onnxruntime_onnx"
    assert gen["generator_generator"].max_batch_size == 0  # [1]-shaped scalar inputs: not batchable
    emb = load_configs(repositories["emb_ort"].root)
    assert emb["embedder_embedding"].max_batch_size == 32
    assert emb["embedder_embedding"].HasField("dynamic_batching")
    optional = {t.name for t in gen["generator"].input if t.optional}
    assert optional == {"MAX_NEW_TOKENS", "MIN_NEW_TOKENS", "NUM_BEAMS", "NUM_RETURN_SEQUENCES", "LENGTH_PENALTY",
                        "REPETITION_PENALTY"}


def test_validation_catches_a_broken_ensemble_and_a_typo(repositories: dict[str, Any], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(repositories["emb_ort"].root, broken)
    ensemble = broken / "embedder" / "config.pbtxt"
    ensemble.write_text(ensemble.read_text().replace('key: "attention_mask"', 'key: "attention_masks"', 1))
    with pytest.raises(GenExportError, match="has no output attention_masks"):
        validate_repository(broken)
    ensemble.write_text(ensemble.read_text().replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(GenExportError, match="not a valid Triton ModelConfig"):
        validate_repository(broken)


def test_onnxruntime_backend_variant_runs_with_declared_tensors(repositories: dict[str, Any]) -> None:
    """The official containers' variant cannot run here; its ONNX file gets exactly the declared tensors."""
    root = repositories["gen_ort"].root
    config = load_configs(root)["generator_generator"]
    session = make_session(root / "generator_generator" / "1" / "model.onnx")
    from tritonclient.grpc import model_config_pb2

    declared = {t.name: NP_TYPES[model_config_pb2.DataType.Name(t.data_type)] for t in config.input}
    assert [i.name for i in session.get_inputs()] == list(declared)
    values = {"input_ids": np.array([[2, 50, 60]]), "attention_mask": np.ones((1, 3)), "max_length": [12],
              "min_length": [0], "num_beams": [2], "num_return_sequences": [1], "length_penalty": [0.0],
              "repetition_penalty": [1.0]}
    out = session.run([t.name for t in config.output], {n: np.asarray(values[n], dtype=t) for n, t in declared.items()})
    assert out[0].shape == (1, 1, 12) and out[0].dtype == np.int32


def _expected_generation(tiny_biogpt: Path, prompts: list[str], new_tokens: int, beams: int) -> list[str]:
    from transformers import BioGptForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_biogpt)
    tokenizer.padding_side = "left"
    model = BioGptForCausalLM.from_pretrained(tiny_biogpt, attn_implementation="eager").eval()
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, num_beams=beams, length_penalty=0.0, early_stopping=False,
                             max_length=batch["input_ids"].shape[1] + new_tokens, pad_token_id=1, eos_token_id=2)
    texts = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        cut = row[: next((i for i, t in enumerate(row) if t in (1, 2)), len(row))]
        texts.append(tokenizer.decode(cut, skip_special_tokens=True))
    return texts


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_generator_ensemble_equals_generate(server, tiny_biogpt: Path, protocol: str) -> None:
    client, module = _client(server, protocol)
    text = module.InferInput("TEXT", [len(PROMPTS)], "BYTES")
    text.set_data_from_numpy(np.array([p.encode() for p in PROMPTS], dtype=np.object_))
    beams = module.InferInput("NUM_BEAMS", [1], "INT32")
    beams.set_data_from_numpy(np.array([2], np.int32))
    for inputs, num_beams in (([text], 4), ([text, beams], 2)):
        result = client.infer("generator", inputs)
        got = [t.decode() for t in result.as_numpy("GENERATED_TEXT")[:, 0]]
        assert got == _expected_generation(tiny_biogpt, PROMPTS, 32, num_beams)
        assert result.as_numpy("SCORES").shape == (len(PROMPTS), 1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embedder_ensemble_equals_onnxruntime(server, embedding_export, protocol: str) -> None:
    client, module = _client(server, protocol)
    text = module.InferInput("TEXT", [len(SENTENCES), 1], "BYTES")
    text.set_data_from_numpy(np.array([[s.encode()] for s in SENTENCES], dtype=np.object_))
    got = client.infer("embedder", [text]).as_numpy("embeddings")
    tokenizer = AutoTokenizer.from_pretrained(embedding_export.output)
    feed = {k: v for k, v in tokenizer(SENTENCES, padding=True, truncation=True, max_length=256,
                                       return_tensors="np").items()}
    expected = make_session(embedding_export.embedding_onnx).run(["embeddings"], feed)[0]
    cos = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert cos.min() >= 0.99999


def _client(server, protocol: str) -> tuple[Any, Any]:
    if protocol == "http":
        import tritonclient.http as module

        return module.InferenceServerClient(server.http_url), module
    import tritonclient.grpc as module

    return module.InferenceServerClient(server.grpc_url), module


@pytest.mark.parametrize(
    ("model", "texts", "extra", "needle"),
    [
        ("generator", [b""], {}, "TEXT is empty"),
        ("generator", [b"\xff\xfe bad"], {}, "not valid UTF-8"),
        ("generator", [b"the patient was treated with"], {"MAX_NEW_TOKENS": 100000}, "exceeds the model's"),
        ("generator", [b"the patient was treated with"], {"NUM_BEAMS": 0}, "NUM_BEAMS is 0"),
        ("embedder", [b"x"] * 33, {}, "batch-size must be <= 32"),
        ("embedder", [b"   "], {}, "TEXT is empty"),
    ],
)
def test_bad_requests_get_clear_errors_and_server_keeps_serving(server, model: str, texts: list[bytes],
                                                                extra: dict[str, int], needle: str) -> None:
    import tritonclient.http as module
    from tritonclient.utils import InferenceServerException

    client = module.InferenceServerClient(server.http_url)
    shape = [len(texts)] if model == "generator" else [len(texts), 1]
    text = module.InferInput("TEXT", shape, "BYTES")
    text.set_data_from_numpy(np.array(texts, dtype=np.object_).reshape(shape))
    inputs = [text]
    for name, value in extra.items():
        tensor = module.InferInput(name, [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], np.int32))
        inputs.append(tensor)
    with pytest.raises(InferenceServerException, match=needle):
        client.infer(model, inputs)
    good = module.InferInput("TEXT", [1] if model == "generator" else [1, 1], "BYTES")
    good.set_data_from_numpy(np.array([b"the drug inhibits"], dtype=np.object_).reshape(good.shape()))
    out = client.infer(model, [good])
    assert out.as_numpy("GENERATED_TEXT" if model == "generator" else "embeddings") is not None


def test_bounded_load_loses_nothing(server, tiny_biogpt: Path) -> None:
    from gen_export.triton_load import run_load

    report = run_load(server.http_url, clients=4, requests_per_client=5)
    assert report.lost == 0 and report.wrong == 0
    assert report.answered == 2 * 4 * 5
    assert report.p50_ms > 0 and report.p99_ms >= report.p50_ms


def test_repository_writer_refuses_wrong_export(embedding_export, tmp_path: Path) -> None:
    with pytest.raises(GenExportError, match="holds a 'embed' export"):
        write_generator_repository(embedding_export.output, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_cli_triton_command_and_bad_folder(embedding_export, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gen_export.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["triton", str(embedding_export.output), str(tmp_path / "repo"), "--backend", "python"])
    assert ok.exit_code == 0, ok.output
    assert set(load_configs(tmp_path / "repo")) == {"embedder", "embedder_tokenizer", "embedder_embedding"}
    bad = runner.invoke(app, ["triton", str(tmp_path / "missing"), str(tmp_path / "repo2")])
    assert bad.exit_code == 2 and "has no genexport.json" in bad.output
    assert not (tmp_path / "repo2").exists()
