"""`genexport deploy`: Kubernetes manifests, validated offline, and their server arguments run for real.

* every manifest passes strict OpenAPI validation (unknown fields rejected) for two Kubernetes minor versions
  (kubernetes-validate's bundled schemas), and a deliberately broken one fails it;
* `kubectl kustomize` renders the folder (skipped with a reason where kubectl is missing);
* the exact tritonserver arguments of the Deployment start the bundled server to ready (ports and repository
  substituted), with resident memory below the Deployment's memory request;
* bad input (not a repository, a failing config, an unknown storage scheme) is a one-line error, nothing written.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gen_export.errors import GenExportError
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.search.search_graph import SearchMode
from gen_export.serve.deploy import (
    GRPC_PORT,
    HTTP_PORT,
    IMAGE_PLACEHOLDER,
    METRICS_PORT,
    read_server_arguments,
    write_deployment,
)
from gen_export.serve.triton import write_generator_repository

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install 'genexport[deploy]'")

#: Two current minor versions (kubernetes-validate 1.37 ships schemas up to 1.37).
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
MANIFESTS = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")


@pytest.fixture(scope="module")
def repositories(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy-repos")
    export = export_generation(tiny_biogpt, root / "export", mode=SearchMode.GREEDY, parity=False,
                               defaults=GenerationDefaults())
    return {"python": write_generator_repository(export.output, root / "repo_py", backend="python").root,
            "onnxruntime": write_generator_repository(export.output, root / "repo_ort").root}


@pytest.fixture(scope="module")
def deployments(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("deploy")
    return {
        "s3": write_deployment(repositories["onnxruntime"], root / "s3", model_store="s3://models/biogpt/v1",
                               image="registry.example.com/ml/genexport-tritonserver:25.03-1"),
        "pvc": write_deployment(repositories["python"], root / "pvc", pvc="model-repo", name="biogpt",
                                namespace="serving"),
        "queue": write_deployment(repositories["onnxruntime"], root / "queue", model_store="gs://bucket/repo",
                                  autoscale_on="queue-time"),
        "azure": write_deployment(repositories["onnxruntime"], root / "azure", model_store="as://acct/cont/repo"),
    }


def _documents(folder: Path) -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load((folder / name).read_text()) for name in MANIFESTS}


def _strict_errors(document: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


def test_every_manifest_is_strictly_valid_for_two_kubernetes_versions(deployments: dict[str, Any]) -> None:
    checked = 0
    for result in deployments.values():
        for name, document in _documents(result.output).items():
            for version in KUBERNETES_VERSIONS:
                assert _strict_errors(document, version) == [], (result.output / name, version)
                checked += 1
    assert checked == 4 * len(MANIFESTS) * len(KUBERNETES_VERSIONS)


def test_strict_validation_rejects_an_unknown_field_and_a_wrong_type(deployments: dict[str, Any]) -> None:
    deployment = _documents(deployments["s3"].output)["deployment.yaml"]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = typo["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    assert _strict_errors(typo, KUBERNETES_VERSIONS[0])
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    assert _strict_errors(wrong, KUBERNETES_VERSIONS[1])


def test_deployment_contents(deployments: dict[str, Any]) -> None:
    result = deployments["s3"]
    docs = _documents(result.output)
    pod = docs["deployment.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE_PLACEHOLDER
    assert [p["containerPort"] for p in container["ports"]] == [HTTP_PORT, GRPC_PORT, METRICS_PORT]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["failureThreshold"] == result.sizing.startup_failure_threshold
    assert "--model-repository=s3://models/biogpt/v1" in container["args"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"] and security["allowPrivilegeEscalation"] is False
    # Requests come from the repository: the ONNX graph's bytes, twice, plus the stubs and the server.
    sizing = result.sizing
    generator = next(m for m in sizing.models if m.name == "generator_generator")
    assert generator.kind == "onnx" and generator.instances == 1 and generator.file_bytes > 100_000
    assert sizing.memory_request_bytes > 2 * generator.file_bytes
    assert container["resources"]["requests"] == {"cpu": sizing.cpu_request, "memory": sizing.memory_request}
    assert json.loads(docs["deployment.yaml"]["metadata"]["annotations"]["genexport/sizing"])[
        "memory_request_bytes"] == sizing.memory_request_bytes
    # Credentials only by reference: every AWS variable comes from the Secret, no value is written anywhere.
    aws = [e for e in container["env"] if e["name"].startswith("AWS_")]
    assert {e["name"] for e in aws} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all("value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "triton-model-store" for e in aws)
    assert [p["port"] for p in docs["service.yaml"]["spec"]["ports"]] == [HTTP_PORT, GRPC_PORT, METRICS_PORT]
    assert docs["hpa.yaml"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert docs["pdb.yaml"]["spec"]["maxUnavailable"] == 1
    dockerfile = (result.output / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:" in dockerfile and "transformers==" in dockerfile
    assert "sacremoses==" in dockerfile and "onnxruntime==" not in dockerfile  # the backend runs the graph
    # The PVC variant mounts the claim read-only and needs onnxruntime in the stub (python backend).
    pvc = deployments["pvc"]
    pod = _documents(pvc.output)["deployment.yaml"]["spec"]["template"]["spec"]
    assert {"name": "model-repository", "persistentVolumeClaim": {"claimName": "model-repo", "readOnly": True}} \
        in pod["volumes"]
    assert "--model-repository=/models" in pod["containers"][0]["args"]
    assert "onnxruntime==" in (pvc.output / "Dockerfile").read_text()
    queue = _documents(deployments["queue"].output)["hpa.yaml"]["spec"]["metrics"][0]
    assert queue["type"] == "Pods" and queue["pods"]["metric"]["name"] == "triton_queue_time_us_per_request"
    assert (deployments["queue"].output / "prometheus-adapter-rules.yaml").is_file()


def test_kubectl_kustomize_renders_the_folder(deployments: dict[str, Any]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` rendering not checked")
    for key in ("s3", "pvc"):
        result = deployments[key]
        rendered = subprocess.run([kubectl, "kustomize", str(result.output)], capture_output=True, text=True,
                                  timeout=60, check=True).stdout
        documents = list(yaml.safe_load_all(rendered))
        assert sorted(d["kind"] for d in documents) == ["Deployment", "HorizontalPodAutoscaler",
                                                        "PodDisruptionBudget", "Service"]
        for document in documents:
            assert _strict_errors(document, KUBERNETES_VERSIONS[1]) == []
        deployment = next(d for d in documents if d["kind"] == "Deployment")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        if key == "s3":
            assert image == "registry.example.com/ml/genexport-tritonserver:25.03-1"
        else:
            assert image == f"{IMAGE_PLACEHOLDER}:25.03"
            assert {d["metadata"]["namespace"] for d in documents} == {"serving"}


def test_bad_input_is_one_line_error_and_nothing_written(repositories: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"

    def refused(repo: Path, **options: Any) -> str:
        with pytest.raises(GenExportError) as caught:
            write_deployment(repo, out, **options)
        assert not out.exists() and not list(tmp_path.glob(".out.staging-*"))
        assert "\n" not in str(caught.value)
        return str(caught.value)

    not_repo = tmp_path / "not_repo"
    not_repo.mkdir()
    (not_repo / "model.onnx").write_bytes(b"x")
    assert "not a Triton model repository" in refused(not_repo, pvc="claim")
    broken = tmp_path / "broken"
    shutil.copytree(repositories["onnxruntime"], broken)
    config = broken / "generator" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_batchsize"))
    assert "not a valid Triton ModelConfig" in refused(broken, pvc="claim")
    assert "unknown storage scheme" in refused(repositories["onnxruntime"], model_store="ftp://host/repo")
    assert "exactly one of" in refused(repositories["onnxruntime"])
    assert "exactly one of" in refused(repositories["onnxruntime"], pvc="claim", model_store="s3://b/p")
    assert "carries credentials" in refused(repositories["onnxruntime"], model_store="s3://key:secret@b/p")


def test_deployment_arguments_start_the_bundled_server(repositories: dict[str, Path],
                                                       deployments: dict[str, Any]) -> None:
    """The PVC Deployment's command line, exactly as written, serves the python-backend repository."""
    pytest.importorskip("pytriton", reason="pip install 'genexport[serve]'")
    import psutil
    import tritonclient.http as http

    from gen_export.serve.triton_server import bundled_triton_server

    result = deployments["pvc"]
    arguments = read_server_arguments(result.output)
    assert arguments == list(result.server_args)
    with bundled_triton_server([repositories["python"]], server_args=arguments) as server:
        written = [a for a in arguments[1:] if not a.startswith(("--model-repository", "--http-port",
                                                                 "--grpc-port", "--metrics-port"))]
        assert all(a in server.command for a in written)  # nothing dropped but what was substituted
        client = http.InferenceServerClient(server.http_url)
        assert client.is_server_ready()
        assert {m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"} == {
            "generator", "generator_tokenizer", "generator_generator", "generator_detokenizer"}
        process = psutil.Process(server.process.pid)
        resident = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    # Shared pages are counted once per process here, so this over-counts: a conservative check.
    assert resident < result.sizing.memory_request_bytes, (resident, result.sizing.memory_request_bytes)


def test_cli_deploy_writes_or_fails_in_one_line(repositories: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gen_export.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["deploy", str(repositories["onnxruntime"]), "--output", str(out),
                                 "--model-store", "s3://models/demo", "--image", "registry.example.com/gx:1"])
    assert result.exit_code == 0, result.output
    assert "kubectl apply -k" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile", "README.md", "deployment.yaml", "genexport.json",
                                                      "hpa.yaml", "kustomization.yaml", "pdb.yaml", "service.yaml"]
    failed = runner.invoke(app, ["deploy", str(repositories["onnxruntime"]), "--output", str(tmp_path / "bad"),
                                 "--model-store", "ftp://host/repo"])
    assert failed.exit_code == 2 and "unknown storage scheme" in failed.output
    assert not (tmp_path / "bad").exists()
