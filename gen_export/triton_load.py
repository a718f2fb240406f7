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

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def table(self) -> str:
        return (
            "| clients | requests/client | answered | lost | wrong | p50 ms | p99 ms | requests/s |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {self.clients} | {self.requests_per_client} (x2 ensembles) | {self.answered} | {self.lost} | "
            f"{self.wrong} | {self.p50_ms:.1f} | {self.p99_ms:.1f} | {self.throughput:.1f} |"
        )


def _request(url: str, model: str, text: str, timeout_s: float) -> Any:
    import tritonclient.http as http

    client = http.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
    if model == "generator":
        tensor = http.InferInput("TEXT", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        return client.infer(model, [tensor]).as_numpy("GENERATED_TEXT").tolist()
    tensor = http.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
    return client.infer(model, [tensor]).as_numpy("embeddings")


def _same(model: str, got: Any, expected: Any) -> bool:
    if model == "generator":
        return got == expected
    return bool(np.allclose(got, expected, atol=1e-5))


def run_load(url: str, clients: int = 4, requests_per_client: int = 5, timeout_s: float = 60.0,
             generator: str = "generator", embedder: str = "embedder") -> LoadReport:
    """Bounded in count (2 * clients * requests_per_client) and in time (timeout_s per request)."""
    work = [(generator, p) for p in GENERATOR_PROMPTS] + [(embedder, t) for t in EMBEDDER_TEXTS]
    baseline = {(m, t): _request(url, m, t, timeout_s) for m, t in work}

    def client_run(index: int) -> list[tuple[float | None, bool]]:
        results = []
        for i in range(requests_per_client):
            for model in (generator, embedder):
                texts = GENERATOR_PROMPTS if model == generator else EMBEDDER_TEXTS
                text = texts[(index + i) % len(texts)]
                start = time.perf_counter()
                try:
                    got = _request(url, model, text, timeout_s)
                except Exception:
                    results.append((None, False))
                    continue
                results.append((time.perf_counter() - start, _same(model, got, baseline[(model, text)])))
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
                      statistics.median(latencies) if latencies else 0.0, p99, seconds)
