"""`genexport deploy`: Kubernetes manifests that serve a genexport Triton model repository.

Written into one folder, applied with one command (`kubectl apply -k DEPLOY_DIR`):

* `deployment.yaml` — tritonserver (HTTP 8000, gRPC 8001, metrics 8002), liveness on `/v2/health/live`,
  readiness on `/v2/health/ready`, a startup probe sized from the repository's bytes, memory and CPU requests
  derived from the models' files and instance counts, non-root with a read-only root filesystem and every
  capability dropped;
* `service.yaml`, `hpa.yaml` (CPU utilisation by default; Triton's queue time through prometheus-adapter
  with `autoscale_on="queue-time"`), `pdb.yaml`, `kustomization.yaml`;
* `Dockerfile` — the derived image: the official Triton image runs the ONNX models, but the tokenizer and
  detokenizer models are python-backend models that import transformers and sacremoses, which it lacks;
* `README.md` (the commands, the sizing) and `genexport.json` (the manifest).

The repository reaches the pods from object storage (`s3://`, `gs://`, `as://`; credentials from an existing
Secret, never written here) or from an existing PersistentVolumeClaim mounted read-only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from gen_export.artifacts import Manifest, sha256_files, staged_output
from gen_export.errors import GenExportError
from gen_export.manifest import DeploySettings

#: The official image the derived one starts from (the README's docker example uses the same tag).
TRITON_BASE_IMAGE = "nvcr.io/nvidia/tritonserver:25.03-py3"
#: The image name the Deployment refers to; kustomization.yaml's `images:` maps it to `--image`.
IMAGE_PLACEHOLDER = "genexport-tritonserver"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
#: The uid/gid of the `triton-server` user of the official image.
TRITON_UID = 1000
MOUNT_PATH = "/models"
STORAGE_SCHEMES = ("s3", "gs", "as")
AUTOSCALE_METRICS = ("cpu", "queue-time")
#: The per-pod metric the queue-time HPA reads (served by prometheus-adapter with the written rule).
QUEUE_TIME_METRIC = "triton_queue_time_us_per_request"

# Sizing constants. Memory: measured on the bundled server here (see README "Deploy on Kubernetes"); the
# test starts the Deployment's arguments and checks the server's resident memory stays below the request.
MIB = 1 << 20
SERVER_BASE_BYTES = 256 * MIB  # tritonserver itself with its HTTP/gRPC front ends
PYTHON_INSTANCE_BYTES = 320 * MIB  # one python stub process with transformers' tokenizer imported
ONNX_INSTANCE_OVERHEAD_BYTES = 64 * MIB  # an onnxruntime session's arenas beyond its weights
ONNX_WEIGHT_FACTOR = 2  # weights as loaded plus onnxruntime's pre-packed copies (MatMul/Gemm)
SHM_BYTES = 256 * MIB  # /dev/shm for the python backend's tensors (Kubernetes' default is 64 MiB)
# Load-time estimate for the startup probe: download (object store), session creation, python imports.
DOWNLOAD_BYTES_PER_S = 25 * 1_000_000
SESSION_BYTES_PER_S = 100 * 1_000_000
PYTHON_INSTANCE_LOAD_S = 15
STARTUP_PERIOD_S = 10


@dataclass(frozen=True)
class ModelSizing:
    """One model of the repository: its backend, instance count and file bytes."""

    name: str
    kind: str  # "onnx", "python" or "ensemble"
    instances: int
    file_bytes: int


@dataclass(frozen=True)
class ReplicaSizing:
    """What one replica requests, and how it was derived."""

    models: tuple[ModelSizing, ...]
    repository_bytes: int
    memory_request_bytes: int
    memory_limit_bytes: int
    cpu_request_millicores: int
    tmp_bytes: int
    load_estimate_s: int
    startup_failure_threshold: int

    @property
    def memory_request(self) -> str:
        return f"{math.ceil(self.memory_request_bytes / MIB)}Mi"

    @property
    def memory_limit(self) -> str:
        return f"{math.ceil(self.memory_limit_bytes / MIB)}Mi"

    @property
    def cpu_request(self) -> str:
        return f"{self.cpu_request_millicores}m"


@dataclass(frozen=True)
class DeploymentResult:
    output: Path
    files: tuple[Path, ...]
    server_args: tuple[str, ...]
    sizing: ReplicaSizing
    model_repository: str
    manifest: Path


def _check_repository(repo_dir: Path) -> dict[str, Any]:
    """The repository's configs, schema-checked with the same checks `genexport triton` runs."""
    from gen_export.serve.triton import load_configs, validate_repository

    if not repo_dir.is_dir() or not any(repo_dir.glob("*/config.pbtxt")):
        raise GenExportError(f"{repo_dir} is not a Triton model repository (no MODEL/config.pbtxt inside)",
                             "point at a folder written by `genexport triton` or `--triton-repo`")
    validate_repository(repo_dir)
    return load_configs(repo_dir)


def size_replica(repo_dir: Path, configs: dict[str, Any], from_object_store: bool) -> ReplicaSizing:
    """Requests derived from the models' files and instance counts (every instance holds its own session)."""
    models = []
    for name, config in sorted(configs.items()):
        files = [p for p in (repo_dir / name).rglob("*") if p.is_file()]
        file_bytes = sum(p.stat().st_size for p in files)
        instances = sum(group.count or 1 for group in config.instance_group) or 1
        if config.platform == "ensemble":
            kind = "ensemble"
        elif config.backend == "python":
            # The python-backend ONNX runner holds an onnxruntime session inside its stub.
            kind = "python-onnx" if any(p.suffix == ".onnx" for p in files) else "python"
        else:
            kind = "onnx"
        models.append(ModelSizing(name, kind, instances, file_bytes))
    repository_bytes = sum(p.stat().st_size for p in repo_dir.rglob("*") if p.is_file())
    memory = SERVER_BASE_BYTES + SHM_BYTES
    cpu = 250
    load_s = 10.0
    for model in models:
        onnx_bytes = model.file_bytes if model.kind in ("onnx", "python-onnx") else 0
        per_instance = ONNX_WEIGHT_FACTOR * onnx_bytes + (ONNX_INSTANCE_OVERHEAD_BYTES if onnx_bytes else 0)
        if model.kind.startswith("python"):
            per_instance += PYTHON_INSTANCE_BYTES
            load_s += PYTHON_INSTANCE_LOAD_S * model.instances
        memory += model.instances * per_instance
        # One core per ONNX session (the generation graph is compute-bound), a quarter per tokenizer stub.
        cpu += model.instances * (1000 if onnx_bytes else 250 if model.kind == "python" else 0)
        load_s += model.instances * onnx_bytes / SESSION_BYTES_PER_S
    if from_object_store:
        load_s += repository_bytes / DOWNLOAD_BYTES_PER_S
    load_estimate = math.ceil(load_s)
    # Twice the estimate before the kubelet gives up: a cold node, a slow store.
    threshold = max(6, math.ceil(2 * load_estimate / STARTUP_PERIOD_S))
    tmp_bytes = (repository_bytes if from_object_store else 0) + 256 * MIB
    return ReplicaSizing(tuple(models), repository_bytes, memory, math.ceil(memory * 1.5), cpu, tmp_bytes,
                         load_estimate, threshold)


def _source(model_store: str | None, pvc: str | None) -> tuple[str, str | None]:
    """(the --model-repository value, the storage scheme or None for a PVC)."""
    if (model_store is None) == (pvc is None):
        raise GenExportError("say where the pods read the model repository from",
                             "pass exactly one of --model-store s3://BUCKET/PREFIX (or gs://, as://) and --pvc CLAIM")
    if pvc is not None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", pvc):
            raise GenExportError(f"'{pvc}' is not a valid PersistentVolumeClaim name",
                                 "use lower-case letters, digits, '-' and '.'")
        return MOUNT_PATH, None
    assert model_store is not None
    scheme, sep, rest = model_store.partition("://")
    if not sep or scheme not in STORAGE_SCHEMES:
        raise GenExportError(f"unknown storage scheme in '{model_store}'",
                             "use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or as://ACCOUNT/CONTAINER/PREFIX")
    if not rest.strip("/") or "@" in rest.split("/", 1)[0]:
        raise GenExportError(f"'{model_store}' names no bucket (or carries credentials)",
                             "give the bucket and prefix only; credentials come from the Secret")
    return model_store.rstrip("/"), scheme


def server_arguments(model_repository: str) -> list[str]:
    """The tritonserver command line of the Deployment (the test runs exactly these on the bundled server)."""
    return [
        "tritonserver",
        f"--model-repository={model_repository}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        "--allow-metrics=true",
        f"--metrics-port={METRICS_PORT}",
        # Ready only when every model is: the readiness probe then gates traffic per replica.
        "--strict-readiness=true",
        "--exit-on-error=true",
        # genexport writes complete configs (schema-checked): nothing for the server to guess.
        "--disable-auto-complete-config",
        # Finish in-flight requests on SIGTERM (terminationGracePeriodSeconds leaves room for it).
        "--exit-timeout-secs=30",
    ]


def _credentials(scheme: str | None, secret: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                             list[dict[str, Any]]]:
    """(env, volumes, volume mounts) that hand the Secret's keys to Triton's cloud-storage clients."""
    if scheme is None:
        return [], [], []
    if scheme == "gs":
        # Triton's GCS client reads the service-account key file named by GOOGLE_APPLICATION_CREDENTIALS.
        env = [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/gcs/key.json"}]
        volumes = [{"name": "gcs-key", "secret": {"secretName": secret, "items": [
            {"key": "key.json", "path": "key.json"}]}}]
        return env, volumes, [{"name": "gcs-key", "mountPath": "/var/run/secrets/gcs", "readOnly": True}]
    keys = (["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"] if scheme == "s3"
            else ["AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"])
    env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in keys]
    if scheme == "s3":  # a temporary-credentials session token, when the Secret has one
        env.append({"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": secret, "key": "AWS_SESSION_TOKEN", "optional": True}}})
    return env, [], []


def _deployment(name: str, labels: dict[str, str], args: list[str], sizing: ReplicaSizing, scheme: str | None,
                pvc: str | None, secret: str, replicas: int, fingerprint: str) -> dict[str, Any]:
    env, volumes, mounts = _credentials(scheme, secret)
    # Triton downloads an object-store repository into a temporary folder: /tmp must hold it. The root filesystem
    # is read-only, so every cache the tokenizer models' libraries might create goes to /tmp too, and the
    # tokenizers load from the repository's own files, never from a hub.
    env += [{"name": "TMPDIR", "value": "/tmp"}, {"name": "HOME", "value": "/tmp"},
            {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"}, {"name": "HF_HOME", "value": "/tmp/huggingface"},
            {"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"}]
    volumes += [
        {"name": "tmp", "emptyDir": {"sizeLimit": f"{math.ceil(sizing.tmp_bytes / MIB)}Mi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_BYTES // MIB}Mi"}},
    ]
    mounts += [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
    if pvc is not None:
        volumes.append({"name": "model-repository", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}})
        mounts.append({"name": "model-repository", "mountPath": MOUNT_PATH, "readOnly": True})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 5,
                "failureThreshold": failures}

    container = {
        "name": "tritonserver",
        "image": IMAGE_PLACEHOLDER,
        "command": [args[0]],
        "args": args[1:],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": sizing.cpu_request, "memory": sizing.memory_request},
            # No CPU limit (throttling adds latency; the HPA scales on the request); memory is bounded.
            "limits": {"memory": sizing.memory_limit},
        },
        "startupProbe": probe("/v2/health/ready", STARTUP_PERIOD_S, sizing.startup_failure_threshold),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "readinessProbe": probe("/v2/health/ready", 5, 3),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    sizing_note = {"memory_request_bytes": sizing.memory_request_bytes, "cpu_request_millicores":
                   sizing.cpu_request_millicores, "repository_bytes": sizing.repository_bytes,
                   "load_estimate_s": sizing.load_estimate_s}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"genexport/sizing": json.dumps(sizing_note, sort_keys=True)}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    # A changed repository changes the pod template, so `apply` rolls the replicas.
                    "genexport/repository-sha256": fingerprint,
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 40,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
                                        "fsGroup": TRITON_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": labels, "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]},
    }


def _hpa(name: str, labels: dict[str, str], min_replicas: int, max_replicas: int, autoscale_on: str,
         cpu_utilization: int, queue_time_us: int) -> dict[str, Any]:
    if autoscale_on == "cpu":
        metric = {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": cpu_utilization}}}
    else:
        metric = {"type": "Pods", "pods": {"metric": {"name": QUEUE_TIME_METRIC}, "target": {
            "type": "AverageValue", "averageValue": str(queue_time_us)}}}
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas, "maxReplicas": max_replicas, "metrics": [metric],
            # Replicas take the startup probe's time to become useful: scale down slowly.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
        },
    }


def _pdb(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "labels": labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}}


PROMETHEUS_ADAPTER_RULE = f"""# prometheus-adapter rule (add under `rules:` of its config, e.g. the Helm chart's
# rules.custom) for hpa.yaml written with --autoscale-on queue-time: mean queue time per request over the last
# minute, per pod, from Triton's cumulative counters on port {METRICS_PORT}. Prometheus must scrape the pods
# (annotations in deployment.yaml, or a PodMonitor).
- seriesQuery: 'nv_inference_queue_duration_us{{namespace!="",pod!=""}}'
  resources:
    overrides:
      namespace: {{resource: namespace}}
      pod: {{resource: pod}}
  name:
    matches: nv_inference_queue_duration_us
    as: {QUEUE_TIME_METRIC}
  metricsQuery: >-
    sum(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>}}[1m])) by (<<.GroupBy>>)
    / sum(rate(nv_inference_request_success{{<<.LabelMatchers>>}}[1m])) by (<<.GroupBy>>)
"""


def _serving_versions() -> dict[str, str]:
    versions = {}
    for package in ("transformers", "tokenizers", "sacremoses", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _dockerfile(python_onnx: bool) -> str:
    versions = _serving_versions()
    packages = [f"transformers=={versions['transformers']}", f"sacremoses=={versions.get('sacremoses', '0.1.1')}",
                '"numpy<2"']
    if python_onnx:  # --backend python repositories run the ONNX files with onnxruntime inside the stub
        packages.append(f"onnxruntime=={versions['onnxruntime']}")
    return f"""# The official Triton image runs the ONNX models (onnxruntime backend). genexport's tokenizer and
# detokenizer are python-backend models: they import transformers and sacremoses, which the official image lacks.
# Build and push once, then point kustomization.yaml's image at it (genexport deploy --image does):
#   docker build -t REGISTRY/genexport-tritonserver:TAG . && docker push REGISTRY/genexport-tritonserver:TAG
# Versions: the ones the repository was written and tested with (numpy < 2 for the python stub's BYTES tensors).
FROM {TRITON_BASE_IMAGE}
# Ubuntu 24.04 based images mark the system Python as externally managed (PEP 668); this image is ours to change.
ENV PIP_BREAK_SYSTEM_PACKAGES=1
RUN pip install --no-cache-dir {" ".join(packages)}
# The official image's non-root user (uid {TRITON_UID}); the Deployment enforces it too.
USER {TRITON_UID}
"""


def _yaml(document: dict[str, Any]) -> str:
    import yaml

    class _NoAliases(yaml.SafeDumper):
        """Plain YAML: the shared label dict written out each time, not as &anchor/*alias."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(document, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)


def _readme(name: str, model_repository: str, scheme: str | None, pvc: str | None, secret: str, image: str,
            sizing: ReplicaSizing, autoscale_on: str) -> str:
    rows = "\n".join(f"| {m.name} | {m.kind} | {m.instances} | {m.file_bytes / MIB:.1f} |" for m in sizing.models)
    if scheme == "s3":
        source = (f"Triton reads `{model_repository}` itself. Create the Secret first (never commit it):\n\n"
                  f"    kubectl create secret generic {secret} --from-literal=AWS_ACCESS_KEY_ID=... \\\n"
                  f"      --from-literal=AWS_SECRET_ACCESS_KEY=... --from-literal=AWS_DEFAULT_REGION=...\n\n"
                  "For S3-compatible stores (MinIO, Ceph) give the endpoint in the URL: "
                  "`s3://https://HOST:PORT/BUCKET/PREFIX`. Upload with `genexport upload REPO s3://BUCKET/PREFIX`: "
                  "it keeps the ensemble's empty version folder (`aws s3 sync` drops empty folders, and Triton "
                  "then finds no version of the ensemble).")
    elif scheme == "gs":
        source = (f"Triton reads `{model_repository}` itself with the service-account key in Secret `{secret}`:\n\n"
                  f"    kubectl create secret generic {secret} --from-file=key.json=KEY.json")
    elif scheme == "as":
        source = (f"Triton reads `{model_repository}` itself. Create the Secret first:\n\n"
                  f"    kubectl create secret generic {secret} --from-literal=AZURE_STORAGE_ACCOUNT=... \\\n"
                  "      --from-literal=AZURE_STORAGE_KEY=...")
    else:
        source = (f"The pods mount the existing PersistentVolumeClaim `{pvc}` read-only at `{MOUNT_PATH}`; copy the "
                  "repository's contents to the volume's root (ReadOnlyMany or ReadWriteMany for more than one node).")
    return f"""# Kubernetes deployment of `{name}` (written by genexport)

1. Build the serving image (see `Dockerfile`: the official Triton image plus transformers and sacremoses for the
   python-backend tokenizer models) and push it; `kustomization.yaml` maps the Deployment's image to `{image}`.
2. {source}

3. `kubectl apply -k .`

Replica requests (derived from the repository by genexport; edit `deployment.yaml` to override):
memory {sizing.memory_request} (limit {sizing.memory_limit}), CPU {sizing.cpu_request}; startup probe allows
{sizing.startup_failure_threshold * STARTUP_PERIOD_S} s for an estimated {sizing.load_estimate_s} s load.
Autoscaling on {"CPU utilisation" if autoscale_on == "cpu" else "Triton's queue time (prometheus-adapter rule in "
                "prometheus-adapter-rules.yaml)"}.

| model | kind | instances | file MiB |
|---|---|---|---|
{rows}
"""


def write_deployment(
    repo_dir: Path,
    output: Path,
    *,
    name: str = "triton",
    model_store: str | None = None,
    pvc: str | None = None,
    credentials_secret: str | None = None,
    image: str = f"{IMAGE_PLACEHOLDER}:25.03",
    namespace: str | None = None,
    min_replicas: int = 2,
    max_replicas: int = 8,
    autoscale_on: str = "cpu",
    cpu_utilization: int = 70,
    queue_time_us: int = 50_000,
    force: bool = False,
) -> DeploymentResult:
    """Write Deployment, Service, HPA, PDB, kustomization.yaml and the derived image's Dockerfile for `repo_dir`.

    Exactly one of `model_store` (an `s3://`, `gs://` or `as://` URL the pods read; credentials from the
    Secret `credentials_secret`, default `<name>-model-store`) and `pvc` (an existing claim holding the
    repository) says where the repository comes from. Nothing is written when any check fails.
    """
    repo_dir = Path(repo_dir)
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,40}[a-z0-9])?", name):
        raise GenExportError(f"'{name}' is not a valid Kubernetes name",
                             "use lower-case letters, digits and '-', starting with a letter")
    if autoscale_on not in AUTOSCALE_METRICS:
        raise GenExportError(f"unknown autoscaling metric '{autoscale_on}'", "use --autoscale-on cpu or queue-time")
    if not 1 <= min_replicas <= max_replicas:
        raise GenExportError(f"replicas {min_replicas}..{max_replicas} is not a range",
                             "use 1 <= --min-replicas <= --max-replicas")
    if not 1 <= cpu_utilization <= 100:
        raise GenExportError(f"CPU utilisation target {cpu_utilization}%", "use 1..100")
    model_repository, scheme = _source(model_store, pvc)
    configs = _check_repository(repo_dir)
    sizing = size_replica(repo_dir, configs, scheme is not None)
    secret = credentials_secret or f"{name}-model-store"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "tritonserver",
              "app.kubernetes.io/managed-by": "genexport"}
    args = server_arguments(model_repository)
    fingerprint = sha256_files([p for p in repo_dir.rglob("*") if p.is_file()])
    documents = {
        "deployment.yaml": _deployment(name, labels, args, sizing, scheme, pvc, secret, min_replicas, fingerprint),
        "service.yaml": _service(name, labels),
        "hpa.yaml": _hpa(name, labels, min_replicas, max_replicas, autoscale_on, cpu_utilization, queue_time_us),
        "pdb.yaml": _pdb(name, labels),
    }
    image_name, _, image_tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": list(documents),
        "images": [{"name": IMAGE_PLACEHOLDER, "newName": image_name, **({"newTag": image_tag} if image_tag else {})}],
    }
    if namespace:
        kustomization["namespace"] = namespace
    python_onnx = any(m.kind == "python-onnx" for m in sizing.models)
    with staged_output(Path(output), force) as staging:
        for file_name, document in documents.items():
            (staging / file_name).write_text(_yaml(document))
        (staging / "kustomization.yaml").write_text(_yaml(kustomization))
        (staging / "Dockerfile").write_text(_dockerfile(python_onnx))
        if autoscale_on == "queue-time":
            (staging / "prometheus-adapter-rules.yaml").write_text(PROMETHEUS_ADAPTER_RULE)
        (staging / "README.md").write_text(
            _readme(name, model_repository, scheme, pvc, secret, image, sizing, autoscale_on))
        Manifest(
            command="deploy",
            source={"repository": str(repo_dir.resolve()), "repository_sha256": fingerprint},
            settings=DeploySettings(name=name, model_repository=model_repository, pvc=pvc,
                                    credentials_secret=secret if scheme else None, image=image,
                                    autoscale_on=autoscale_on, replicas=[min_replicas, max_replicas],
                                    server_args=list(args), sizing=asdict(sizing)),
        ).write(staging)
        files = tuple(sorted(p.name for p in staging.iterdir()))
    output = Path(output).resolve()
    return DeploymentResult(output, tuple(output / f for f in files), tuple(args), sizing, model_repository,
                            output / "genexport.json")


def read_server_arguments(deploy_dir: Path) -> list[str]:
    """The tritonserver command line as written in `deploy_dir/deployment.yaml` (command + args)."""
    import yaml

    deployment = yaml.safe_load((Path(deploy_dir) / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return [*container["command"], *container["args"]]
