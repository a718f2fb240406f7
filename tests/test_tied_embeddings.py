"""Tied embeddings stored once: the token lookup reads the logits MatMul's [hidden, vocab] weight (Gather on
axis 1, then a Transpose of the gathered rows) and the exporter's [vocab, hidden] copy is dropped. Same outputs as
the graph with the copy, one weight fewer in the file, untied weights untouched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_decoders import cached_checkpoint
from onnx import numpy_helper

import gen_export.export.decoder as decoder_module
from gen_export.export.decoder import export_decoder_onnx, load_decoder
from gen_export.export.tied_embeddings import share_tied_embedding, share_tied_embedding_file
from gen_export.runtime import logits_projection, make_session


@pytest.fixture(scope="module", params=["biogpt", "gpt2", "opt"])
def decoders(request: pytest.FixtureRequest, tiny_biogpt: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """(the decoder as the exporter writes it, the same with the embedding shared, dims)."""
    checkpoint = tiny_biogpt if request.param == "biogpt" else cached_checkpoint(request.param)
    folder = tmp_path_factory.mktemp(f"tied-{request.param}")
    loaded = load_decoder(checkpoint)
    with pytest.MonkeyPatch.context() as patch:  # the export without the transform: the "before" graph
        patch.setattr(decoder_module, "share_tied_embedding_file", lambda path: None)
        before = export_decoder_onnx(loaded, folder / "before.onnx")
    after = folder / "after.onnx"
    shutil.copy2(before, after)
    assert share_tied_embedding_file(after) is not None
    return before, after, loaded.dims


def _feed(dims, batch: int = 2, length: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(3, dims.vocab_size, (batch, length)).astype(np.int32),
            "position_ids": np.tile(np.arange(length, dtype=np.int32), (batch, 1)),
            "attention_mask": np.ones((batch, length), np.int32)} | {
        f"past_{i}": np.zeros((2, batch, dims.num_heads, 0, dims.head_dim), np.float32) for i in range(dims.num_layers)}


def test_one_copy_of_the_embedding_and_the_same_outputs(decoders) -> None:
    before, after, dims = decoders
    matrices = {}
    for label, path in (("before", before), ("after", after)):
        graph = onnx.load(str(path)).graph
        matrices[label] = [t.name for t in graph.initializer if sorted(t.dims) == sorted([dims.vocab_size,
                                                                                           dims.hidden_size])]
    assert len(matrices["before"]) == 2 and len(matrices["after"]) == 1
    saved = before.stat().st_size - after.stat().st_size
    assert saved >= 4 * dims.vocab_size * dims.hidden_size - 1024  # one float32 [vocab, hidden] matrix
    graph = onnx.load(str(after)).graph
    projection = logits_projection(graph)  # the walk the init-decoder patch and quantize_decoder use
    assert projection is not None and projection.op_type == "MatMul"  # untouched: still on its initializer
    assert projection.input[1] == matrices["after"][0]
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] == projection.input[1]]
    assert len(lookups) == 1 and {a.name: a.i for a in lookups[0].attribute} == {"axis": 1}
    feed = _feed(dims)
    expected = make_session(before).run(None, feed)
    actual = make_session(after).run(None, feed)
    for e, a in zip(expected, actual, strict=True):
        np.testing.assert_array_equal(a, e)
    # A one-token step with past too (the shape family beam search runs most).
    step = _feed(dims, batch=3, length=1)
    past = expected[1:]
    step |= {f"past_{i}": p[:, :1].repeat(3, axis=1) for i, p in enumerate(past)}
    step["position_ids"] = np.full((3, 1), 5, np.int32)
    step["attention_mask"] = np.ones((3, 6), np.int32)
    for e, a in zip(make_session(before).run(None, step), make_session(after).run(None, step), strict=True):
        np.testing.assert_array_equal(a, e)


def test_untied_weights_are_left_alone(decoders) -> None:
    before, _, _ = decoders
    model = onnx.load(str(before))
    projection = logits_projection(model.graph)
    copy = next(t for t in model.graph.initializer if t.name == projection.input[1])
    values = numpy_helper.to_array(copy).copy()
    values[0, 0] += 1.0  # no longer the transpose of the embedding: an untied output projection
    copy.CopyFrom(numpy_helper.from_array(values, copy.name))
    count = len(model.graph.initializer)
    assert share_tied_embedding(model) is None
    assert len(model.graph.initializer) == count
