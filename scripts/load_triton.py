"""Bounded load test: export the demo generator and all-MiniLM-L6-v2, serve both on the bundled
tritonserver (127.0.0.1 only), and hammer the two ensembles with K clients x N requests.

    .venv/bin/python scripts/load_triton.py [--clients 8] [--requests 20] [--protocol both] [--quick]
    .venv/bin/python scripts/load_triton.py --sizing [--instances 1 2] [--clients 8] [--requests 20]

Bounded: clients x requests x 2 ensembles requests, each with --timeout seconds at most.
Exits non-zero when any answer is lost or differs from the answer the same input got alone.

`--sizing` measures one replica per configuration instead: each ensemble alone, its models at 1 and 2 instances
(`instance_group` count of every member), one fresh server each; it prints requests/s, p50/p99 and the
server's resident memory (process tree: tritonserver and its python stubs) with the load average, for the
replica sizing of `genexport deploy` (README "Deploy on Kubernetes").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gen_export.demo import cached_checkpoint
from gen_export.embed import export_embedding
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.serve.triton import validate_repository, write_embedding_repository, write_generator_repository
from gen_export.serve.triton_load import EMBEDDER_TEXTS, GENERATOR_PROMPTS, _Client, _same, run_load
from gen_export.serve.triton_server import bundled_triton_server


@dataclass
class ReplicaRun:
    model: str
    instances: int
    clients: int
    answered: int
    lost: int
    wrong: int
    p50_ms: float
    p99_ms: float
    seconds: float
    rss_mb: float
    load: str

    def row(self) -> str:
        rate = self.answered / self.seconds if self.seconds else 0.0
        return (f"| {self.model} | {self.instances} | {self.clients} | {self.answered} | {self.lost} | {self.wrong} "
                f"| {self.p50_ms:.1f} | {self.p99_ms:.1f} | {rate:.1f} | {self.rss_mb:.0f} | {self.load} |")


SIZING_HEADER = ("| ensemble | instances per model | clients | answered | lost | wrong | p50 ms | p99 ms | requests/s "
                 "| server RSS MB | load avg (1/5/15 min) |\n|---|---|---|---|---|---|---|---|---|---|---|")


def with_instances(repository: Path, target: Path, count: int) -> Path:
    """A copy of `repository` with every member model at `count` instances (the ensemble has no instances)."""
    shutil.copytree(repository, target)
    for config in target.glob("*/config.pbtxt"):
        text = config.read_text()
        config.write_text(re.sub(r"(instance_group \[ \{ kind: KIND_CPU count: )\d+", rf"\g<1>{count}", text))
    validate_repository(target)
    return target


def tree_rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 1e6


def load_one(url: str, model: str, generator: bool, clients: int, requests: int, timeout_s: float,
             server_pid: int, instances: int) -> ReplicaRun:
    """K clients x N requests to one ensemble; every answer compared with the answer its input got alone."""
    texts = GENERATOR_PROMPTS if generator else EMBEDDER_TEXTS
    reference = _Client(url, "http", timeout_s)
    baseline = {t: reference.infer(model, t, generator) for t in texts}

    def client_run(index: int) -> list[tuple[float | None, bool]]:
        client = _Client(url, "http", timeout_s)
        results: list[tuple[float | None, bool]] = []
        for i in range(requests):
            text = texts[(index + i) % len(texts)]
            start = time.perf_counter()
            try:
                got = client.infer(model, text, generator)
            except Exception:  # counted as lost: a refused, failed or timed-out request
                results.append((None, False))
                continue
            results.append((time.perf_counter() - start, _same(generator, got, baseline[text])))
        return results

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [r for batch in pool.map(client_run, range(clients)) for r in batch]
    seconds = time.perf_counter() - start
    rss = tree_rss_mb(server_pid)
    latencies = sorted(t * 1000 for t, _ in outcomes if t is not None)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    return ReplicaRun(model, instances, clients, len(latencies), sum(t is None for t, _ in outcomes),
                      sum(t is not None and not ok for t, ok in outcomes),
                      statistics.median(latencies) if latencies else 0.0, p99, seconds, rss,
                      "/".join(f"{x:.1f}" for x in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description="Bounded load test of genexport's Triton repositories.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client and ensemble")
    parser.add_argument("--protocol", choices=["http", "grpc", "both"], default="both")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--quick", action="store_true", help="2 clients x 3 requests")
    parser.add_argument("--sizing", action="store_true", help="per-replica throughput at 1 and 2 instances")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2], help="with --sizing")
    args = parser.parse_args()
    clients, requests = (2, 3) if args.quick else (args.clients, args.requests)
    if not 1 <= clients <= 64 or not 1 <= requests <= 1000 or not all(1 <= n <= 8 for n in args.instances):
        parser.error("use 1..64 clients, 1..1000 requests per client and 1..8 instances")
    protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        gen = export_generation(cached_checkpoint("tiny"), root / "gen", parity=False,
                                defaults=GenerationDefaults(length_penalty=0.0))
        emb = export_embedding(None, root / "emb")
        repos = [write_generator_repository(gen.output, root / "r1", backend="python").root,
                 write_embedding_repository(emb.output, root / "r2", backend="python").root]
        if args.sizing:
            runs = []
            for repository, model, generator in ((repos[0], "generator", True), (repos[1], "embedder", False)):
                for count in args.instances:
                    copy = with_instances(repository, root / f"{model}-x{count}", count)
                    with bundled_triton_server([copy]) as server:
                        runs.append(load_one(server.http_url, model, generator, clients, requests, args.timeout,
                                             server.process.pid, count))
            print(f"Per replica: one bundled tritonserver (python backend), HTTP, {clients} clients x {requests} "
                  f"requests, {os.cpu_count()} CPUs on this machine.\n")
            print(SIZING_HEADER)
            print("\n".join(run.row() for run in runs))
            lost, wrong = sum(r.lost for r in runs), sum(r.wrong for r in runs)
            if lost or wrong:
                raise SystemExit(f"{lost} lost and {wrong} wrong answers")
            return
        with bundled_triton_server(repos) as server:
            reports = [run_load(server.http_url if protocol == "http" else server.grpc_url, clients=clients,
                                requests_per_client=requests, timeout_s=args.timeout, protocol=protocol)
                       for protocol in protocols]
    for report in reports:
        print(report.table())
    lost, wrong = sum(r.lost for r in reports), sum(r.wrong for r in reports)
    if lost or wrong:
        raise SystemExit(f"{lost} lost and {wrong} wrong answers")


if __name__ == "__main__":
    main()
