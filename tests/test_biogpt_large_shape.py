"""BioGPT-Large's shape and the external-data path (weights beside the graph, for models over 2 GB).

The real-size run is slow (many minutes, well over 16 GB RAM at 48 layers) and marked `slow`. The same
path is also proven in CI on a tiny model, by making genexport's export write the decoder with external
data as it does for any decoder over 2 GB (GENEXPORT_FORCE_EXTERNAL_DATA=1): genexport must then fuse with
--use_external_data_format, keep the data file beside the graph, hash it in the manifest and load it from
wherever the folder is moved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from gen_export.artifacts import sha256_file
from gen_export.export.export_spec import FORCE_EXTERNAL_DATA_ENV
from gen_export.generation import export_generation
from gen_export.runtime import make_session
from gen_export.search.search_graph import SearchMode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_biogpt_large_shape_exports_with_external_data(tmp_path: Path) -> None:
    layers = os.environ.get("GENEXPORT_LARGE_LAYERS", "48")  # 12 still exceeds 2 GB on a 16 GB machine
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_biogpt_large_shape.py"),
         "--output", str(tmp_path / "o"), "--scratch", str(tmp_path), "--num-layers", layers],
        capture_output=True, text=True, timeout=3 * 3600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("summary: "))
    summary = json.loads(line.removeprefix("summary: "))
    assert summary["verdict"] == "match" and summary["graph_tokens"] == summary["generate_tokens"]
    data = [name for name in summary["files"] if name.endswith(".data")]
    assert data and summary["files"][data[0]] > 2**31  # the weights really are beyond protobuf's 2 GB


def test_external_data_path_end_to_end_on_a_tiny_model(tiny_biogpt: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # export_spec's switch for "save the exported graph with external data" (otherwise automatic above 2 GB).
    monkeypatch.setenv(FORCE_EXTERNAL_DATA_ENV, "1")
    result = export_generation(tiny_biogpt, tmp_path / "o", mode=SearchMode.BEAM)
    files = sorted(p.name for p in result.output.iterdir())
    assert files == ["beam_search.onnx", "beam_search.onnx.data", "genexport.json", "tokenizer"]
    data = result.output / "beam_search.onnx.data"
    # The graph file holds structure only: every weight matrix of the decoder subgraph is external.
    graph = onnx.load(str(result.graph_onnx), load_external_data=False)
    decoder = next(a.g for a in graph.graph.node[0].attribute if a.name == "decoder")
    matrices = [t for t in decoder.initializer if len(t.dims) == 2]
    assert matrices and all(t.data_location == onnx.TensorProto.EXTERNAL for t in matrices)
    assert data.stat().st_size > sum(4 * t.dims[0] * t.dims[1] for t in matrices) * 0.99
    assert result.parity is not None and result.parity.passed
    manifest = json.loads(result.manifest.read_text())
    hashes = {a["path"]: a["sha256"] for a in manifest["artifacts"]}
    assert hashes["beam_search.onnx.data"] == sha256_file(data)
    # The data file is found relative to the graph: the folder can be moved.
    moved = shutil.copytree(result.output, tmp_path / "moved")
    shutil.rmtree(result.output)
    session = make_session(moved / "beam_search.onnx")
    assert [o.name for o in session.get_outputs()] == ["sequences", "sequences_scores"]
