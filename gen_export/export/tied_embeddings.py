"""One initializer for tied input/output embeddings in an exported decoder.

The TorchScript exporter writes a tied `embed_tokens.weight` twice: `[vocab, hidden]` for the token Gather and a
transposed `[hidden, vocab]` copy for the logits MatMul (+87 MB at the mid BioGPT shape, +174 MB at BioGPT-base).
This transform keeps the MatMul's `[hidden, vocab]` weight and makes the token lookup read it:
`Gather(E, ids)` becomes `Transpose(Gather(W, ids, axis=1))` (the Transpose moves the hidden axis of the few
gathered rows last), and E is dropped. The logits MatMul is untouched, so the logits-projection walk
(`runtime.logits_projection`), the first-step decoder patch, `quantize_decoder` and convert_generation's shape
inference see the graph they always saw. Outputs are bit-identical.

Measured alternatives (mid shape, scripts/bench_tied_embeddings.py): `MatMul(h, Transpose(E))` halves the file
too, but onnxruntime constant-folds the Transpose back into a copy at session creation (peak RSS unchanged);
`com.microsoft.FusedMatMul(h, E, transB=1)` saved the most memory but convert_generation's symbolic shape inference
cannot type its output ("Incomplete symbolic shape inference"). The two weights are compared value by value: an
untied checkpoint is left alone.
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


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor ranks by ONNX shape inference on the graph's structure alone (initializers as typed inputs, no data)."""
    structure = onnx.ModelProto()
    structure.ir_version = model.ir_version
    structure.opset_import.extend(model.opset_import)
    graph = structure.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in model.graph.initializer)
    graph.output.extend(model.graph.output)
    inferred = onnx.shape_inference.infer_shapes(structure).graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.value_info, *inferred.input]
            if v.type.tensor_type.HasField("shape")}


def share_tied_embedding(model: onnx.ModelProto) -> SharedEmbedding | None:
    """Rewrite `model` in place when its logits MatMul weight is the transpose of a Gather'd embedding."""
    graph = model.graph
    projection = logits_projection(graph)
    if projection is None or projection.op_type != "MatMul":
        return None
    initializers = {t.name: t for t in graph.initializer}
    weight = initializers.get(projection.input[1])
    if weight is None or len(weight.dims) != 2:
        return None
    hidden, vocab = weight.dims
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in initializers
               and list(initializers[n.input[0]].dims) == [vocab, hidden]
               and all(a.name != "axis" or a.i == 0 for a in n.attribute)]
    weight_values = numpy_helper.to_array(weight)
    gather = next((n for n in gathers
                   if np.array_equal(numpy_helper.to_array(initializers[n.input[0]]), weight_values.T)), None)
    if gather is None:
        return None
    embedding = initializers[gather.input[0]]
    if [n for n in graph.node if embedding.name in n.input] != [gather]:
        return None
    rank = _ranks(model).get(gather.input[1])
    if rank is None:  # the Transpose needs the ids' rank; unknown: leave the graph as it is
        return None
    gathered = f"{gather.output[0]}/hidden_first"
    transpose = helper.make_node("Transpose", [gathered], [gather.output[0]], perm=[*range(1, rank + 1), 0],
                                 name="TiedEmbeddingGatherTranspose")
    gather.input[0] = weight.name
    gather.output[0] = gathered
    del gather.attribute[:]
    gather.attribute.append(helper.make_attribute("axis", 1))
    graph.node.insert(list(graph.node).index(gather) + 1, transpose)
    graph.initializer.remove(embedding)
    return SharedEmbedding(weight.name, embedding.name, int(weight_values.nbytes))


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
