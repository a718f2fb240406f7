"""The object-store path, proven: a repository uploaded to an S3-compatible server (moto's server mode on
127.0.0.1), downloaded back byte-identical against the upload's sha256 list, and served by the bundled
tritonserver straight from `s3://` (the URL form a Deployment's --model-store takes for S3-compatible stores).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gen_export.artifacts import sha256_file
from gen_export.errors import GenExportError
from gen_export.generation import export_generation
from gen_export.search.search_graph import SearchMode
from gen_export.serve.object_store import UPLOAD_MANIFEST, download_repository, parse_s3_url, upload_repository
from gen_export.serve.triton import write_generator_repository

pytest.importorskip("boto3", reason="pip install 'genexport[deploy]'")
moto_server = pytest.importorskip("moto.server", reason="pip install 'genexport[deploy]' (moto[server])")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "genexport-test", "AWS_SECRET_ACCESS_KEY": "genexport-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port; fake credentials only in this process's environment."""
    import boto3

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def repository(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3-repo")
    export = export_generation(tiny_biogpt, root / "export", mode=SearchMode.GREEDY, parity=False)
    return write_generator_repository(export.output, root / "repo", backend="python").root


def test_upload_and_download_are_byte_identical(repository: Path, s3_endpoint: str, tmp_path: Path) -> None:
    uploaded = upload_repository(repository, "s3://models/biogpt/v1", endpoint_url=s3_endpoint)
    local = {p.relative_to(repository).as_posix(): p for p in repository.rglob("*") if p.is_file()}
    assert {f.key for f in uploaded.files} == set(local)
    assert all(f.sha256 == sha256_file(local[f.key]) for f in uploaded.files)
    assert any(f.key == "generator_generator/1/model.onnx" for f in uploaded.files)

    back = download_repository("s3://models/biogpt/v1", tmp_path / "back", endpoint_url=s3_endpoint)
    assert back.files == uploaded.files  # the sha256 list read back from the store
    fetched = {p.relative_to(tmp_path / "back").as_posix(): p for p in (tmp_path / "back").rglob("*") if p.is_file()}
    assert set(fetched) == set(local)
    # The ensemble's empty version folder survives the round trip (Triton needs it to load the ensemble).
    assert uploaded.empty_folders == ("generator/1",) and (tmp_path / "back" / "generator" / "1").is_dir()
    for key, path in fetched.items():
        assert path.read_bytes() == local[key].read_bytes(), key


def test_a_changed_object_is_caught_on_download(repository: Path, s3_endpoint: str, tmp_path: Path) -> None:
    import boto3

    upload_repository(repository, "s3://models/tampered", endpoint_url=s3_endpoint)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket="models", Key="tampered/generator_generator/config.pbtxt", Body=b"name: \"x\"\n")
    with pytest.raises(GenExportError, match="differs from what was uploaded"):
        download_repository("s3://models/tampered", tmp_path / "back", endpoint_url=s3_endpoint)
    assert not (tmp_path / "back").exists()


def test_bad_urls_and_missing_buckets_are_one_line_errors(repository: Path, s3_endpoint: str) -> None:
    with pytest.raises(GenExportError, match="unknown storage scheme"):
        parse_s3_url("gcs://bucket/prefix")
    with pytest.raises(GenExportError, match="names no bucket"):
        parse_s3_url("s3:///prefix")
    with pytest.raises(GenExportError, match=r"S3 upload of s3://no-such-bucket/p failed \(NoSuchBucket\)"):
        upload_repository(repository, "s3://no-such-bucket/p", endpoint_url=s3_endpoint)
    with pytest.raises(GenExportError, match="not a Triton model repository"):
        upload_repository(repository / "generator", "s3://models/p", endpoint_url=s3_endpoint)


def test_bundled_server_loads_the_repository_from_s3(repository: Path, s3_endpoint: str) -> None:
    """Triton's own S3 client (compiled into the bundled libtritonserver) reads the uploaded repository."""
    pytest.importorskip("pytriton", reason="pip install 'genexport[serve]'")
    import numpy as np
    import tritonclient.http as http

    from gen_export.serve.triton_server import bundled_triton_server

    upload_repository(repository, "s3://models/served", endpoint_url=s3_endpoint)
    url = f"s3://{s3_endpoint}/models/served"  # Triton's form for S3-compatible endpoints: s3://http://HOST:PORT/...
    with bundled_triton_server([url], extra_env=CREDENTIALS) as server:
        client = http.InferenceServerClient(server.http_url)
        ready = {m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"}
        assert ready == {"generator", "generator_tokenizer", "generator_generator", "generator_detokenizer"}
        text = http.InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"the patient was treated with"], dtype=object))
        answer = client.infer("generator", [text]).as_numpy("GENERATED_TEXT")
        assert answer.shape == (1, 1) and answer[0, 0]
        assert f"{UPLOAD_MANIFEST}" not in ready
