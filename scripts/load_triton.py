"""Bounded load test: export the demo generator and all-MiniLM-L6-v2, serve both on the bundled
tritonserver (127.0.0.1 only), and hammer the two ensembles with K clients x N requests.

    .venv/bin/python scripts/load_triton.py [--clients 8] [--requests 20] [--protocol both] [--quick]

Bounded: clients x requests x 2 ensembles requests, each with --timeout seconds at most.
Exits non-zero when any answer is lost or differs from the answer the same input got alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gen_export.demo import cached_checkpoint
from gen_export.embed import export_embedding
from gen_export.generation import GenerationDefaults, export_generation
from gen_export.triton import write_embedding_repository, write_generator_repository
from gen_export.triton_load import run_load
from gen_export.triton_server import bundled_triton_server


def main() -> None:
    parser = argparse.ArgumentParser(description="Bounded load test of genexport's Triton repositories.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client and ensemble")
    parser.add_argument("--protocol", choices=["http", "grpc", "both"], default="both")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--quick", action="store_true", help="2 clients x 3 requests")
    args = parser.parse_args()
    clients, requests = (2, 3) if args.quick else (args.clients, args.requests)
    if not 1 <= clients <= 64 or not 1 <= requests <= 1000:
        parser.error("use 1..64 clients and 1..1000 requests per client")
    protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        gen = export_generation(cached_checkpoint("tiny"), root / "gen", parity=False,
                                defaults=GenerationDefaults(length_penalty=0.0))
        emb = export_embedding(None, root / "emb")
        repos = [write_generator_repository(gen.output, root / "r1", backend="python").root,
                 write_embedding_repository(emb.output, root / "r2", backend="python").root]
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
