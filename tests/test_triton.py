"""Triton repositories: schema-checked configs, and a real tritonserver answering over HTTP and gRPC.

One server (the one bundled in the nvidia-pytriton wheel, 127.0.0.1, free ports) loads three python-backend
repositories for the whole module: beam generator, greedy generator, embedder. The onnxruntime-backend
variants (for the official containers) are schema-checked and their ONNX files run with the declared tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from gen_export.errors import GenExportError
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.runtime import make_session
from gen_export.search.search_graph import SearchMode
from gen_export.serve.triton import (
    CONTAINER_MAX_IR_VERSION,
    DEFAULT_MAX_PROMPTS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TEXT_BYTES,
    load_configs,
    validate_repository,
    write_embedding_repository,
    write_generator_repository,
)

PROMPTS = ["the patient was treated with", "mutations in tp53 cause", "expression of egfr was reduced in"]
SENTENCES = ["Kidneys filter blood.",
             "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase in the liver."]
NP_TYPES = {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_FP32": np.float32}
NEW_TOKENS = 32  # the repositories' MAX_NEW_TOKENS default


@pytest.fixture(scope="module")
def generator_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory):
    defaults = GenerationDefaults(num_beams=4, length_penalty=0.0)  # where generate and the op agree exactly
    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("gen") / "out", defaults=defaults)


@pytest.fixture(scope="module")
def greedy_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory):
    # Parity is proven by test_generation; here the served text is compared with generate below.
    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("greedy") / "out", mode=SearchMode.GREEDY,
                             parity=False)


@pytest.fixture(scope="module")
def embedding_export(tmp_path_factory: pytest.TempPathFactory):
    from gen_export.embed import export_embedding

    return export_embedding(None, tmp_path_factory.mktemp("emb") / "out")


@pytest.fixture(scope="module")
def repositories(generator_export, greedy_export, embedding_export,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("repos")
    return {
        "gen_python": write_generator_repository(generator_export.output, root / "gen_py", backend="python"),
        "greedy_python": write_generator_repository(greedy_export.output, root / "greedy_py", name="greedy",
                                                    backend="python"),
        "emb_python": write_embedding_repository(embedding_export.output, root / "emb_py", backend="python"),
        "gen_ort": write_generator_repository(generator_export.output, root / "gen_ort"),
        "emb_ort": write_embedding_repository(embedding_export.output, root / "emb_ort"),
    }


@pytest.fixture(scope="module")
def server(repositories: dict[str, Any], request: pytest.FixtureRequest):
    from gen_export.serve.triton_server import bundled_triton_server

    failed_before = request.session.testsfailed
    roots = [repositories[k].root for k in ("gen_python", "greedy_python", "emb_python")]
    with bundled_triton_server(roots) as running:
        yield running
        if request.session.testsfailed > failed_before:  # something failed: show what the server said
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\n--- tritonserver log ({running.log_path}) ---")
                reporter.write_line(running.log()[-20000:])


def _client(server, protocol: str) -> tuple[Any, Any]:
    if protocol == "http":
        import tritonclient.http as module

        return module.InferenceServerClient(server.http_url), module
    import tritonclient.grpc as module

    return module.InferenceServerClient(server.grpc_url), module


def _text_input(module: Any, texts: list[bytes], batched: bool) -> Any:
    shape = [len(texts), 1] if batched else [len(texts)]
    tensor = module.InferInput("TEXT", shape, "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_).reshape(shape))
    return tensor


def _scalar_input(module: Any, name: str, value: float) -> Any:
    """A [1]-shaped parameter: FP32 for the penalties, INT32 for the rest (as the ensemble declares them)."""
    dtype, numpy_type = ("FP32", np.float32) if name.endswith("PENALTY") else ("INT32", np.int32)
    tensor = module.InferInput(name, [1], dtype)
    tensor.set_data_from_numpy(np.array([value], numpy_type))
    return tensor


def _server_rss_bytes(server: Any) -> int:
    """Resident memory of the server and its python stubs (its private process group)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == server.process.pid:  # field 5 of /proc/PID/stat: the process group
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss in pages
        except (OSError, IndexError, ValueError):
            continue
    return total


def test_every_config_parses_as_triton_model_config(repositories: dict[str, Any]) -> None:
    for repository in repositories.values():
        configs = load_configs(repository.root)
        assert set(configs) == set(repository.models)
        validate_repository(repository.root)
    gen = load_configs(repositories["gen_ort"].root)
    assert gen["generator_generator"].platform == "onnxruntime_onnx"
    assert gen["generator_generator"].max_batch_size == 0  # [1]-shaped scalar inputs: not batchable
    assert gen["generator_tokenizer"].parameters["max_prompts"].string_value == str(DEFAULT_MAX_PROMPTS)
    emb = load_configs(repositories["emb_ort"].root)
    assert emb["embedder_embedding"].max_batch_size == 32
    assert emb["embedder_embedding"].HasField("dynamic_batching")
    assert emb["embedder_tokenizer"].HasField("dynamic_batching")
    optional = {t.name for t in gen["generator"].input if t.optional}
    assert optional == {"MAX_NEW_TOKENS", "MIN_NEW_TOKENS", "NUM_BEAMS", "NUM_RETURN_SEQUENCES",
                        "LENGTH_PENALTY", "REPETITION_PENALTY"}
    assert {t.name for t in gen["generator"].output} == {"GENERATED_TEXT", "SCORES"}
    # Greedy: the parameters follow the graph's inputs (no beams, no length penalty), and no scores.
    greedy = load_configs(repositories["greedy_python"].root)
    assert {t.name for t in greedy["greedy"].input} == {"TEXT", "MAX_NEW_TOKENS", "MIN_NEW_TOKENS",
                                                        "REPETITION_PENALTY"}
    assert {t.name for t in greedy["greedy"].output} == {"GENERATED_TEXT"}
    assert greedy["greedy_generator"].backend == "python"


def test_validation_catches_a_broken_ensemble_and_a_typo(repositories: dict[str, Any],
                                                         tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(repositories["emb_ort"].root, broken)
    ensemble = broken / "embedder" / "config.pbtxt"
    ensemble.write_text(ensemble.read_text().replace('key: "attention_mask"', 'key: "attention_masks"', 1))
    with pytest.raises(GenExportError, match="has no output attention_masks"):
        validate_repository(broken)
    ensemble.write_text(ensemble.read_text().replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(GenExportError, match="not a valid Triton ModelConfig"):
        validate_repository(broken)


def _declared_generator_feed(config: Any) -> dict[str, np.ndarray]:
    from tritonclient.grpc import model_config_pb2

    declared = {t.name: NP_TYPES[model_config_pb2.DataType.Name(t.data_type)] for t in config.input}
    values = {"input_ids": np.array([[2, 50, 60]]), "attention_mask": np.ones((1, 3)), "max_length": [12],
              "min_length": [0], "num_beams": [2], "num_return_sequences": [1], "length_penalty": [0.0],
              "repetition_penalty": [1.0]}
    return {n: np.asarray(values[n], dtype=t) for n, t in declared.items()}


def test_onnxruntime_backend_variant_runs_with_declared_tensors(repositories: dict[str, Any],
                                                               generator_export) -> None:
    """The official containers' variant cannot run here; its ONNX file gets exactly the declared tensors."""
    import onnx
    from tritonclient.grpc import model_config_pb2

    root = repositories["gen_ort"].root
    config = load_configs(root)["generator_generator"]
    model_file = root / "generator_generator" / "1" / "model.onnx"
    session = make_session(model_file)
    feed = _declared_generator_feed(config)
    assert [i.name for i in session.get_inputs()] == list(feed)
    out = session.run([t.name for t in config.output], feed)
    assert out[0].shape == (1, 1, 12) and out[0].dtype == np.int32
    # The IR stamp is lowered for the containers' older onnxruntime; the answers stay the export's own.
    assert onnx.load(str(model_file), load_external_data=False).ir_version <= CONTAINER_MAX_IR_VERSION
    original = make_session(generator_export.output / "beam_search.onnx").run(
        [t.name for t in config.output], feed)
    np.testing.assert_array_equal(out[0], original[0])
    np.testing.assert_array_equal(out[1], original[1])

    emb_root = repositories["emb_ort"].root
    emb = load_configs(emb_root)["embedder_embedding"]
    session = make_session(emb_root / "embedder_embedding" / "1" / "model.onnx")
    feed = {t.name: np.ones((2, 5), NP_TYPES[model_config_pb2.DataType.Name(t.data_type)]) for t in emb.input}
    (embeddings,) = session.run([t.name for t in emb.output], feed)
    assert embeddings.shape == (2, *emb.output[0].dims)  # dims exclude the batch dim (max_batch_size > 0)


OLD_ORT_CHECK = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feed = {i.name: np.load(sys.argv[2])[i.name] for i in session.get_inputs()}
print(ort.__version__, session.run(None, feed)[0].ravel().tolist())
"""


@pytest.mark.skipif("GENEXPORT_OLD_ORT_PYTHON" not in os.environ,
                    reason="GENEXPORT_OLD_ORT_PYTHON: a Python with onnxruntime==1.20.1 (Triton 25.03's)")
def test_onnxruntime_variant_loads_in_the_containers_onnxruntime(repositories: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    """The official container's onnxruntime is older than ours: run the variant's files with that version."""
    root = repositories["gen_ort"].root
    config = load_configs(root)["generator_generator"]
    feed = _declared_generator_feed(config)
    np.savez(tmp_path / "feed.npz", **feed)
    model_file = root / "generator_generator" / "1" / "model.onnx"
    command = [os.environ["GENEXPORT_OLD_ORT_PYTHON"], "-c", OLD_ORT_CHECK, str(model_file),
               str(tmp_path / "feed.npz")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    _version, tokens = run.stdout.split(" ", 1)
    expected = make_session(model_file).run(["sequences"], feed)[0]
    assert json.loads(tokens) == expected.ravel().tolist()


def _expected_generation(tiny_biogpt: Path, prompts: list[str],
                         beams: int) -> tuple[list[str], np.ndarray | None]:
    """What `model.generate` says for the same flags: the text after the padded prompt, and beam scores."""
    from transformers import BioGptForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_biogpt)
    tokenizer.padding_side = "left"
    model = BioGptForCausalLM.from_pretrained(tiny_biogpt, attn_implementation="eager").eval()
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    beam_flags = {"length_penalty": 0.0, "early_stopping": False} if beams > 1 else {}
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, num_beams=beams, **beam_flags, pad_token_id=1,
                             eos_token_id=2, max_length=batch["input_ids"].shape[1] + NEW_TOKENS,
                             output_scores=True, return_dict_in_generate=True)
    texts = []
    for row in out.sequences[:, batch["input_ids"].shape[1]:].tolist():
        cut = row[: next((i for i, t in enumerate(row) if t in (1, 2)), len(row))]
        texts.append(tokenizer.decode(cut, skip_special_tokens=True))
    scores = out.sequences_scores.numpy() if beams > 1 else None
    return texts, scores


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_generator_ensemble_equals_generate(server, tiny_biogpt: Path, protocol: str) -> None:
    client, module = _client(server, protocol)
    text = _text_input(module, [p.encode() for p in PROMPTS], batched=False)
    for inputs, num_beams in (([text], 4), ([text, _scalar_input(module, "NUM_BEAMS", 2)], 2)):
        result = client.infer("generator", inputs)
        got = [t.decode() for t in result.as_numpy("GENERATED_TEXT")[:, 0]]
        expected, scores = _expected_generation(tiny_biogpt, PROMPTS, num_beams)
        assert all(expected)  # the demo model writes something: an empty answer would prove little
        assert got == expected
        assert result.as_numpy("SCORES").shape == (len(PROMPTS), 1)
        # length_penalty 0: both sides score a beam by its summed log-probabilities.
        np.testing.assert_allclose(result.as_numpy("SCORES")[:, 0], scores, atol=1e-4)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_greedy_ensemble_equals_generate(server, tiny_biogpt: Path, protocol: str) -> None:
    client, module = _client(server, protocol)
    result = client.infer("greedy", [_text_input(module, [p.encode() for p in PROMPTS], batched=False)])
    got = [t.decode() for t in result.as_numpy("GENERATED_TEXT")[:, 0]]
    assert got == _expected_generation(tiny_biogpt, PROMPTS, 1)[0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embedder_ensemble_equals_onnxruntime(server, embedding_export, protocol: str) -> None:
    client, module = _client(server, protocol)
    got = client.infer("embedder", [_text_input(module, [s.encode() for s in SENTENCES], batched=True)])
    got = got.as_numpy("embeddings")
    tokenizer = AutoTokenizer.from_pretrained(embedding_export.output)
    feed = dict(tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="np"))
    expected = make_session(embedding_export.embedding_onnx).run(["embeddings"], feed)[0]
    assert got.shape == expected.shape
    cos = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert cos.min() >= 0.99999


@pytest.mark.parametrize(
    ("model", "texts", "extra", "needle"),
    [
        ("generator", [b""], {}, "TEXT is empty"),
        ("generator", [b"\xff\xfe bad"], {}, "not valid UTF-8"),
        ("generator", [b"the patient was treated with"], {"MAX_NEW_TOKENS": 100000}, "exceeds the model's"),
        ("generator", [b"the patient " * 2000], {}, "exceeds the model's"),
        ("generator", [b"the patient was treated with"], {"NUM_BEAMS": 0}, "NUM_BEAMS is 0"),
        ("generator", [b"the patient was treated with"], {"NUM_BEAMS": 2, "NUM_RETURN_SEQUENCES": 3},
         "NUM_RETURN_SEQUENCES is 3"),
        ("generator", [b"aspirin"] * (DEFAULT_MAX_PROMPTS + 1), {}, f"send at most {DEFAULT_MAX_PROMPTS}"),
        ("greedy", [b"ok", b""], {}, "TEXT is empty"),
        ("embedder", [b"x"] * 33, {}, "batch-size must be <= 32"),
        ("embedder", [b"   "], {}, "TEXT is empty"),
        ("embedder", [b"\xc3\x28"], {}, "not valid UTF-8"),
        ("generator", [b"the patient was treated with"], {"LENGTH_PENALTY": float("nan")}, "LENGTH_PENALTY is nan"),
        ("generator", [b"the patient was treated with"], {"LENGTH_PENALTY": float("inf")}, "LENGTH_PENALTY is inf"),
        ("generator", [b"the patient was treated with"], {"REPETITION_PENALTY": float("-inf")},
         "REPETITION_PENALTY is -inf"),
        ("generator", [b"a" * (DEFAULT_MAX_TEXT_BYTES + 1)], {}, f"at most {DEFAULT_MAX_TEXT_BYTES} bytes per text"),
        ("generator", [b"a" * DEFAULT_MAX_TEXT_BYTES] * 9, {}, f"send at most {DEFAULT_MAX_REQUEST_BYTES}"),
        ("embedder", [b"b" * (DEFAULT_MAX_TEXT_BYTES + 1)], {}, "bytes per text"),
    ],
)
def test_bad_requests_get_clear_errors_and_server_keeps_serving(server, model: str, texts: list[bytes],
                                                                extra: dict[str, float], needle: str) -> None:
    import tritonclient.http as module
    from tritonclient.utils import InferenceServerException

    client = module.InferenceServerClient(server.http_url)
    batched = model == "embedder"
    inputs = [_text_input(module, texts, batched)]
    inputs += [_scalar_input(module, name, value) for name, value in extra.items()]
    with pytest.raises(InferenceServerException, match=needle) as refused:
        client.infer(model, inputs)
    assert refused.value.status() == "400"  # a client error (TritonError.INVALID_ARG), not a server fault
    out = client.infer(model, [_text_input(module, [b"the drug inhibits"], batched)])
    if batched:
        assert out.as_numpy("embeddings").shape[0] == 1
    else:
        assert out.as_numpy("GENERATED_TEXT")[0, 0].decode().strip()


@pytest.mark.parametrize(("model", "count"), [("generator", DEFAULT_MAX_PROMPTS), ("embedder", 32)])
def test_oversized_request_is_refused_before_tokenizing(server, model: str, count: int) -> None:
    """16 prompts (32 embedder texts) of 1 MB each: before the size limits they were tokenized in full (~30 s
    holding the model instance, server memory 1.5 -> 4.9 GB). Now the request is refused on its byte count at
    once, the next normal request is answered, and the server's memory stays where it was."""
    import tritonclient.grpc as grpc_module
    import tritonclient.http as module
    from tritonclient.utils import InferenceServerException

    client = module.InferenceServerClient(server.http_url, network_timeout=120.0)
    batched = model == "embedder"
    normal = [_text_input(module, [b"the drug inhibits"], batched)]
    client.infer(model, normal)  # warm: the first answer may load lazily
    rss_before = _server_rss_bytes(server)
    huge = [_text_input(module, [bytes([97 + i % 26]) * (1 << 20) for i in range(count)], batched)]
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match="bytes per text") as refused:
        client.infer(model, huge)
    refused_after = time.monotonic() - started
    assert refused.value.status() == "400"
    # A functional bound, far from the ~30 s the old tokenize-first behaviour took (16 MB still has to travel).
    assert refused_after < 5.0, refused_after
    answer = client.infer(model, normal)
    assert answer.as_numpy("embeddings" if batched else "GENERATED_TEXT").shape[0] == 1
    rss_after = _server_rss_bytes(server)
    assert rss_before > 0
    assert rss_after - rss_before < 512 << 20, (rss_before, rss_after)  # the old run grew by 3.4 GB
    # gRPC says the same with its own code for a client error.
    grpc_client = grpc_module.InferenceServerClient(server.grpc_url)
    grpc_huge = [_text_input(grpc_module, [b"x" * (DEFAULT_MAX_TEXT_BYTES + 1)], batched)]
    with pytest.raises(InferenceServerException, match="bytes per text") as grpc_refused:
        grpc_client.infer(model, grpc_huge)
    assert grpc_refused.value.status() == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize(("protocol", "clients", "requests"), [("http", 4, 5), ("grpc", 2, 3)])
def test_bounded_load_loses_nothing(server, protocol: str, clients: int, requests: int) -> None:
    from gen_export.serve.triton_load import run_load

    url = server.http_url if protocol == "http" else server.grpc_url
    report = run_load(url, clients=clients, requests_per_client=requests, timeout_s=60, protocol=protocol)
    assert (report.lost, report.wrong) == (0, 0)
    assert report.answered == 2 * clients * requests
    assert 0 < report.p50_ms <= report.p99_ms
    assert "| 0 | 0 |" in report.table()


def test_repository_writer_refuses_wrong_export(embedding_export, tmp_path: Path) -> None:
    with pytest.raises(GenExportError, match="holds a 'embed' export"):
        write_generator_repository(embedding_export.output, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(GenExportError, match="unknown Triton backend"):
        write_embedding_repository(embedding_export.output, tmp_path / "r", backend="tensorrt")
    assert not (tmp_path / "r").exists()


def test_repository_writer_is_atomic_and_respects_force(embedding_export, tmp_path: Path) -> None:
    target = tmp_path / "repo"
    write_embedding_repository(embedding_export.output, target, name="first")
    with pytest.raises(GenExportError):  # an existing folder is kept unless --force
        write_embedding_repository(embedding_export.output, target, name="second")
    assert set(load_configs(target)) == {"first", "first_tokenizer", "first_embedding"}
    write_embedding_repository(embedding_export.output, target, name="second", force=True)
    assert set(load_configs(target)) == {"second", "second_tokenizer", "second_embedding"}
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging or backup folder left behind


def test_cli_triton_command_and_bad_folder(embedding_export, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gen_export.cli import app

    runner = CliRunner()
    args = ["triton", str(embedding_export.output), str(tmp_path / "repo"), "--backend", "python"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert set(load_configs(tmp_path / "repo")) == {"embedder", "embedder_tokenizer", "embedder_embedding"}
    bad = runner.invoke(app, ["triton", str(tmp_path / "missing"), str(tmp_path / "repo2")])
    assert bad.exit_code == 2 and "has no genexport.json" in bad.output
    assert not (tmp_path / "repo2").exists()
