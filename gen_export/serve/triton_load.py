"""A bounded load test of the generator and embedder ensembles on a local Triton server.

K concurrent clients each send N requests to both ensembles (2*K*N in all, each with a time limit).
Every answer is checked against the answer the same input got when sent alone, before the load:
under concurrency nothing may be lost, mixed up or changed.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

GENERATOR_PROMPTS = ("the patient was treated with", "mutations in tp53 cause", "loss of pten leads to",
                     "the drug inhibits")
EMBEDDER_TEXTS = ("Kidneys filter blood.", "Insulin lowers blood glucose.", "What does BRCA1 do?",
                  "Aspirin irreversibly inhibits cyclooxygenase.")


@dataclass
class LoadReport:
    clients: int
    requests_per_client: int
    answered: int
    lost: int
    wrong: int
    p50_ms: float
    p99_ms: float
    seconds: float
    protocol: str = "http"

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def table(self) -> str:
        return (
            "| protocol | clients | requests/client | answered | lost | wrong | p50 ms | p99 ms "
            "| requests/s |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| {self.protocol} | {self.clients} | {self.requests_per_client} (x2 ensembles) "
            f"| {self.answered} | {self.lost} | {self.wrong} | {self.p50_ms:.1f} | {self.p99_ms:.1f} "
            f"| {self.throughput:.1f} |"
        )


class _Client:
    """One client connection per worker thread (tritonclient's clients are not shared across threads)."""

    def __init__(self, url: str, protocol: str, timeout_s: float) -> None:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module  # type: ignore[no-redef]
        self.module, self.protocol, self.timeout_s = module, protocol, timeout_s
        if protocol == "grpc":
            self.client = module.InferenceServerClient(url)
        else:  # HTTP timeouts are per client; gRPC's are per call (client_timeout below)
            self.client = module.InferenceServerClient(url, network_timeout=timeout_s,
                                                       connection_timeout=timeout_s)

    def infer(self, model: str, text: str, generator: bool) -> Any:
        shape = [1] if generator else [1, 1]  # the generator is unbatched, the embedder batched
        tensor = self.module.InferInput("TEXT", shape, "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_).reshape(shape))
        if self.protocol == "grpc":
            result = self.client.infer(model, [tensor], client_timeout=self.timeout_s)
        else:
            result = self.client.infer(model, [tensor])
        return result.as_numpy("GENERATED_TEXT").tolist() if generator else result.as_numpy("embeddings")


def _same(generator: bool, got: Any, expected: Any) -> bool:
    if generator:
        return bool(got == expected)
    return bool(np.allclose(got, expected, atol=1e-5))


def run_load(url: str, clients: int = 4, requests_per_client: int = 5, timeout_s: float = 60.0,
             generator: str = "generator", embedder: str = "embedder",
             protocol: str = "http") -> LoadReport:
    """Bounded in count (2 * clients * requests_per_client) and in time (timeout_s per request)."""
    reference = _Client(url, protocol, timeout_s)
    baseline = {(generator, p): reference.infer(generator, p, True) for p in GENERATOR_PROMPTS}
    baseline |= {(embedder, t): reference.infer(embedder, t, False) for t in EMBEDDER_TEXTS}

    def client_run(index: int) -> list[tuple[float | None, bool]]:
        client = _Client(url, protocol, timeout_s)
        results = []
        for i in range(requests_per_client):
            for model in (generator, embedder):
                texts = GENERATOR_PROMPTS if model == generator else EMBEDDER_TEXTS
                text = texts[(index + i) % len(texts)]
                start = time.perf_counter()
                try:
                    got = client.infer(model, text, model == generator)
                except Exception:  # counted as lost: a refused, failed or timed-out request
                    results.append((None, False))
                    continue
                results.append((time.perf_counter() - start, _same(model == generator, got,
                                                                   baseline[(model, text)])))
        return results

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [r for batch in pool.map(client_run, range(clients)) for r in batch]
    seconds = time.perf_counter() - start
    latencies = sorted(t * 1000 for t, _ in outcomes if t is not None)
    lost = sum(t is None for t, _ in outcomes)
    wrong = sum(t is not None and not ok for t, ok in outcomes)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    return LoadReport(clients, requests_per_client, len(latencies), lost, wrong,
                      statistics.median(latencies) if latencies else 0.0, p99, seconds, protocol)
