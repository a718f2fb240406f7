"""Tied embeddings stored once vs twice: file size, peak memory and per-step speed of the same decoder.

A random-weight BioGPT of the given shape is exported once without the transform ("two copies", what the
exporter writes) and the transform is applied to a copy ("one copy"). Peak RSS is measured in a fresh process per
graph (load + session creation + one decoder step: ru_maxrss), the per-step time by alternating runs in this
process (batch 1, one new token, past 24), and the outputs of both graphs are compared.

    .venv/bin/python scripts/bench_tied_embeddings.py [--shapes mid base] [--runs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_generate import SHAPES, build_biogpt

import gen_export.export.decoder as decoder_module
from gen_export.export.decoder import export_decoder_onnx, load_decoder
from gen_export.export.tied_embeddings import share_tied_embedding_file
from gen_export.runtime import make_session

PAST = 24

# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a child of this (large) process would report
# the parent's peak; VmHWM belongs to the child's own address space.
_CHILD = """
import json, sys
import numpy as np
from gen_export.runtime import make_session
path, feed_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
feed = dict(np.load(feed_path))
make_session(path, threads=threads).run(None, feed)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"peak_rss_kb": int(status["VmHWM"].split()[0])}))
"""


def step_feed(dims, past: int = PAST) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(3, dims.vocab_size, (1, 1)).astype(np.int32),
            "position_ids": np.array([[past]], np.int32), "attention_mask": np.ones((1, past + 1), np.int32)} | {
        f"past_{i}": rng.standard_normal((2, 1, dims.num_heads, past, dims.head_dim)).astype(np.float32)
        for i in range(dims.num_layers)}


def peak_rss_mb(path: Path, feed_path: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(feed_path), str(threads)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_kb"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["mid"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for shape in args.shapes:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            model_dir, params = build_biogpt(root / "model", SHAPES[shape])
            loaded = load_decoder(model_dir)
            original = decoder_module.share_tied_embedding_file
            decoder_module.share_tied_embedding_file = lambda path: None  # the exporter's own output
            try:
                twice = export_decoder_onnx(loaded, root / "twice.onnx")
            finally:
                decoder_module.share_tied_embedding_file = original
            dims = loaded.dims
            del loaded
            once = root / "once.onnx"
            shutil.copy2(twice, once)
            shared = share_tied_embedding_file(once)
            assert shared is not None
            feed = step_feed(dims)
            feed_path = root / "feed.npz"
            np.savez(feed_path, **feed)
            graphs = {"two copies (exporter)": twice, "one copy (shared)": once}
            rss = {name: [peak_rss_mb(path, feed_path, args.threads) for _ in range(3)] for name, path in
                   graphs.items()}
            sessions = {name: make_session(path, threads=args.threads) for name, path in graphs.items()}
            outputs = [s.run(None, feed) for s in sessions.values()]
            same = all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))
            times: dict[str, list[float]] = {name: [] for name in graphs}
            for _ in range(args.runs):
                for name, session in sessions.items():
                    start = time.perf_counter()
                    session.run(None, feed)
                    times[name].append(time.perf_counter() - start)
            for name, path in graphs.items():
                rows.append(f"| {shape} ({params / 1e6:.1f}M) | {name} | {path.stat().st_size / 1e6:.1f} | "
                            f"{statistics.median(rss[name]):.0f} | {statistics.median(times[name]) * 1e3:.2f} | "
                            f"{min(times[name]) * 1e3:.2f}–{max(times[name]) * 1e3:.2f} | "
                            f"{'yes' if same else 'NO'} |")
            del sessions
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Decoder step (batch 1, 1 new token, past {PAST}), intra-op threads {args.threads}, {args.runs} alternating "
          f"runs; peak RSS = VmHWM, median of 3 fresh processes (load, session, one step); load average {load}.\n")
    print("| shape | graph | file MB | peak RSS MB | step median ms | min–max ms | same outputs |\n"
          "|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
