"""One initializer for tied input/output embeddings in an exported decoder.

The TorchScript exporter writes a tied `embed_tokens.weight` twice: `[vocab, hidden]` for the token Gather and a
transposed `[hidden, vocab]` copy for the logits MatMul (+87 MB at the mid BioGPT shape, +174 MB at BioGPT-base).
This transform keeps the embedding and feeds the MatMul `Transpose(embedding)` instead of the copy: one weight in
the file. The MatMul itself stays (the logits-projection walk `runtime.logits_projection`, the first-step decoder
patch and `quantize_decoder`'s fp32 logits exclusion find it as before); onnxruntime folds the Transpose once at
session creation. The two weights are compared value by value: an untied checkpoint is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gen_export.runtime import logits_projection, needs_external_data


@dataclass(frozen=True)
class SharedEmbedding:
    """What the transform did: the weight kept, the copy dropped and the bytes saved."""

    kept: str
    dropped: str
    saved_bytes: int


def share_tied_embedding(model: onnx.ModelProto) -> SharedEmbedding | None:
    """Rewrite `model` in place when its logits MatMul weight is the transpose of a Gather'd embedding."""
    graph = model.graph
    projection = logits_projection(graph)
    if projection is None or projection.op_type != "MatMul":
        return None
    initializers = {t.name: t for t in graph.initializer}
    copy = initializers.get(projection.input[1])
    if copy is None or len(copy.dims) != 2:
        return None
    users = [n for n in graph.node if copy.name in n.input]
    if users != [projection]:
        return None
    hidden, vocab = copy.dims
    candidates = [initializers[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in initializers
                  and list(initializers[n.input[0]].dims) == [vocab, hidden]
                  and all(a.name != "axis" or a.i == 0 for a in n.attribute)]
    copy_values = numpy_helper.to_array(copy)
    embedding = next((e for e in candidates if np.array_equal(numpy_helper.to_array(e), copy_values.T)), None)
    if embedding is None:
        return None
    transposed = f"{embedding.name}/transposed_for_logits"
    transpose = helper.make_node("Transpose", [embedding.name], [transposed], perm=[1, 0],
                                 name="TiedEmbeddingTranspose")
    graph.node.insert(list(graph.node).index(projection), transpose)
    projection.input[1] = transposed
    graph.initializer.remove(copy)
    return SharedEmbedding(embedding.name, copy.name, int(copy_values.nbytes))


def share_tied_embedding_file(path: Path) -> SharedEmbedding | None:
    """`share_tied_embedding` on a saved decoder, rewritten where it lies (external data kept external)."""
    path = Path(path)
    external = needs_external_data(path)
    model = onnx.load(str(path), load_external_data=True)
    shared = share_tied_embedding(model)
    if shared is None:
        return None
    if external:
        for leftover in path.parent.iterdir():  # onnx appends to an existing data file: start from none
            if leftover.name.startswith(path.name) and leftover != path:
                leftover.unlink()
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return shared


def unshare_tied_embedding(model: onnx.ModelProto) -> bool:
    """Undo `share_tied_embedding` in place (the transposed weight back as an initializer); False if not shared.

    For quantizing the logits projection itself (`quantize_decoder(..., keep_logits_fp32=False)`): onnxruntime's
    quantizers only quantize a MatMul whose weight is an initializer. The quantized copy is then the only one
    that is not fp32, which is the point of quantizing it.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    transpose = next((n for n in graph.node if n.name == "TiedEmbeddingTranspose" and n.input[0] in initializers),
                     None)
    if transpose is None:
        return False
    values = numpy_helper.to_array(initializers[transpose.input[0]]).T.copy()
    graph.initializer.append(numpy_helper.from_array(values, transpose.output[0]))
    graph.node.remove(transpose)
    return True
