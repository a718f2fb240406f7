"""Fuse a decoder's self-attention into one onnxruntime contrib operator, past and present included.

onnxruntime's own GPT-2 fusion (FusionGptAttention) only recognises GPT-2's Conv1D layout (one merged qkv
projection followed by Split). Decoders whose attention uses three nn.Linear projections (BioGPT, OPT) export
as separate q/k/v MatMul + Add, and stay unfused there. This pass matches the exported pattern from each
`present_i` output backwards, which is the same for every decoder wrapped by `PastPresentDecoder`:

    present_i = Concat(Unsqueeze(K), Unsqueeze(V))             K = Concat(Gather(past_i, 0), heads(k_proj(x)))
    probs = Softmax(Mul(MatMul(heads(q_proj(x)), Transpose(K)), scale) + mask)
    out_proj(merge_heads(MatMul(probs, V)))                     V = Concat(Gather(past_i, 1), heads(v_proj(x)))

(OPT also pre-scales the query, and casts the probabilities to float32: both are folded in.) The heads split,
scaling, causal + padding mask, softmax, past concatenation and heads merge become one node, fed by the 2-D
`attention_mask` as key padding mask with `unidirectional=1`; the model's own additive 4-D mask is then dead
and pruned. Two operators can take it:

- `MultiHeadAttention` (default): the q/k/v MatMuls stay as they are (one GEMM each over all rows) and the
  node adds their biases; past_key/past_value are the halves of `past_i`, and present_key/present_value are
  stacked back into `present_i` by the existing Concat. Measured at the BioGPT-base shape (4 rows, past 24,
  2 threads; benchmarks/decoder-step.md): 1.05x the unfused graph per one-token step, 1.02x on the first step.
- `Attention`: the older operator that reads and writes the stacked (2, batch, heads, len, head_dim) past and
  present directly and does the q/k/v projection itself from concatenated weights. Its CPU kernel computes
  that projection per (row, head), re-reading each head's weights for every row: 0.82x the unfused graph
  per step at the same shape, so it is only kept as an option.

Numerics: masked scores get -10000 instead of float32's minimum, which underflows to the same zero probability
for every position a real token attends to; rows of padding tokens, which nothing attends to, may differ (the
decoder validation compares real positions only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gen_export.export.architectures.base import DecoderDims
from gen_export.quiet import quiet_logging
from gen_export.runtime import needs_external_data

MASK_INPUT = "attention_mask"


@dataclass
class _Projection:
    matmul: onnx.NodeProto
    weight: str
    bias: str


class _Graph:
    """Producer/consumer lookups and constant reads over one ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.refresh()

    def refresh(self) -> None:
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def parent(self, node: onnx.NodeProto, index: int, op_type: str) -> onnx.NodeProto | None:
        if index >= len(node.input):
            return None
        parent = self.producer.get(node.input[index])
        return parent if parent is not None and parent.op_type == op_type else None

    def only_child(self, name: str, op_type: str) -> onnx.NodeProto | None:
        children = self.consumers.get(name, [])
        return children[0] if len(children) == 1 and children[0].op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def attribute(self, node: onnx.NodeProto, name: str, default: Any = None) -> Any:
        for attribute in node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default


def _projection(g: _Graph, heads: onnx.NodeProto) -> tuple[_Projection, float] | None:
    """Transpose(Reshape([Mul(c)] Add(bias, MatMul(x, W)))) -> the MatMul/Add pair and the pre-scale c.

    OPT multiplies the query by head_dim**-0.5 before splitting heads (the optional Mul); BioGPT scales scores.
    """
    if heads.op_type != "Transpose" or list(g.attribute(heads, "perm", [])) != [0, 2, 1, 3]:
        return None
    reshape = g.parent(heads, 0, "Reshape")
    if reshape is None:
        return None
    pre_scale = 1.0
    mul = g.parent(reshape, 0, "Mul")
    if mul is not None:
        value = g.constant(mul.input[1])
        if value is None or value.size != 1:
            return None
        pre_scale = float(value.reshape(()))
        add = g.parent(mul, 0, "Add")
    else:
        add = g.parent(reshape, 0, "Add")
    if add is None:
        return None
    for matmul_index in (0, 1):
        matmul = g.parent(add, matmul_index, "MatMul")
        bias = add.input[1 - matmul_index]
        if matmul is not None and matmul.input[1] in g.initializers and bias in g.initializers:
            return _Projection(matmul, matmul.input[1], bias), pre_scale
    return None


def _skip_float_casts(g: _Graph, name: str) -> str:
    """Follow Cast-to-float32 nodes (no-ops in a float32 graph, as OPT exports after Softmax)."""
    while (cast := g.only_child(name, "Cast")) is not None and g.attribute(cast, "to") == onnx.TensorProto.FLOAT:
        name = cast.output[0]
    return name


def _past_half(g: _Graph, name: str, past: str, index: int) -> str | None:
    """The `Gather(past, index)` output that `name` is (through identity Concats), or None."""
    node = g.producer.get(name)
    # A DynamicCache filled by update() (both transformers lines) traces to a one-input Concat (an identity)
    # after the past half; optimum-onnx used to patch that away, torch.onnx.export keeps it.
    while node is not None and node.op_type == "Concat" and len(node.input) == 1:
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Gather" or node.input[0] != past:
        return None
    value = g.constant(node.input[1])
    return node.output[0] if value is not None and value.size == 1 and int(value.reshape(())) == index else None


def _fuse_layer(g: _Graph, present: str, past: str, num_heads: int, mask: str,
                operator: str) -> onnx.NodeProto | None:
    """Returns the Attention node for one layer and rewires its consumers, or None if the pattern differs."""
    stack = g.producer.get(present)
    if stack is None or stack.op_type != "Concat" or len(stack.input) != 2:
        return None
    halves = [g.parent(stack, i, "Unsqueeze") for i in (0, 1)]
    if None in halves:
        return None
    key_all, value_all = (g.producer.get(h.input[0]) for h in halves)  # type: ignore[union-attr]
    if key_all is None or value_all is None or key_all.op_type != "Concat" or value_all.op_type != "Concat":
        return None
    key_past, value_past = _past_half(g, key_all.input[0], past, 0), _past_half(g, value_all.input[0], past, 1)
    if key_past is None or value_past is None:
        return None
    k_heads, v_heads = g.producer.get(key_all.input[1]), g.producer.get(value_all.input[1])
    k_found = _projection(g, k_heads) if k_heads is not None else None
    v_found = _projection(g, v_heads) if v_heads is not None else None
    # Scores: MatMul(q_heads, Transpose(K, 0 1 3 2)) -> Mul(scale) -> Add(mask) -> Softmax.
    key_t = next((c for c in g.consumers.get(key_all.output[0], []) if c.op_type == "Transpose"), None)
    scores = g.only_child(key_t.output[0], "MatMul") if key_t is not None else None
    if k_found is None or v_found is None or scores is None or list(g.attribute(key_t, "perm", [])) != [0, 1, 3, 2]:
        return None
    (k, k_scale), (v, v_scale) = k_found, v_found
    q_heads = g.producer.get(scores.input[0])
    q_found = _projection(g, q_heads) if q_heads is not None else None
    scaled = g.only_child(scores.output[0], "Mul")
    if q_found is None or scaled is None or k_scale != 1.0 or v_scale != 1.0:
        return None
    q, q_scale = q_found
    scale = g.constant(scaled.input[1])
    masked = g.only_child(scaled.output[0], "Add")
    softmax = g.only_child(masked.output[0], "Softmax") if masked is not None else None
    context = g.only_child(_skip_float_casts(g, softmax.output[0]), "MatMul") if softmax is not None else None
    if scale is None or scale.size != 1 or context is None or context.input[1] != value_all.output[0]:
        return None
    merge_t = g.only_child(context.output[0], "Transpose")
    merge = g.only_child(merge_t.output[0], "Reshape") if merge_t is not None else None
    if merge is None or not (q.matmul.input[0] == k.matmul.input[0] == v.matmul.input[0]):
        return None

    prefix = q.matmul.name.rsplit("/q_proj", 1)[0] if "/q_proj" in q.matmul.name else present
    biases = [numpy_helper.to_array(g.initializers[p.bias]) for p in (q, k, v)]
    qkv_bias = numpy_helper.from_array(np.concatenate(biases, axis=0), f"{prefix}/qkv_bias")
    g.graph.initializer.append(qkv_bias)
    common = {"domain": "com.microsoft", "num_heads": num_heads, "unidirectional": 1,
              "scale": q_scale * float(scale.reshape(()))}
    if operator == "MultiHeadAttention":
        # The q/k/v MatMuls stay (plain GEMMs over all rows); their biases, the heads split, mask, softmax,
        # the past concatenation and the merge go into one node. present_i is still stacked by the existing
        # Concat(Unsqueeze(key), Unsqueeze(value)), now fed by the operator's present_key/present_value.
        attention = helper.make_node(
            "MultiHeadAttention",
            [q.matmul.output[0], k.matmul.output[0], v.matmul.output[0], qkv_bias.name, mask, "",
             key_past, value_past],
            [f"{prefix}/MultiHeadAttention_output_0", f"{prefix}/present_key", f"{prefix}/present_value"],
            name=f"{prefix}/MultiHeadAttention",
            **common,
        )
        halves[0].input[0], halves[1].input[0] = attention.output[1], attention.output[2]  # type: ignore[union-attr]
    else:
        weights = [numpy_helper.to_array(g.initializers[p.weight]) for p in (q, k, v)]
        qkv_weight = numpy_helper.from_array(np.concatenate(weights, axis=1), f"{prefix}/qkv_weight")
        g.graph.initializer.append(qkv_weight)
        attention = helper.make_node(
            "Attention",
            [q.matmul.input[0], qkv_weight.name, qkv_bias.name, mask, past],
            [f"{prefix}/Attention_output_0", present],
            name=f"{prefix}/Attention",
            **common,
        )
        g.graph.node.remove(stack)  # the operator produces present_i itself
    g.graph.node.append(attention)
    for consumer in g.consumers.get(merge.output[0], []):
        for i, name in enumerate(consumer.input):
            if name == merge.output[0]:
                consumer.input[i] = attention.output[0]
    return attention


def fuse_attention(model: onnx.ModelProto, num_layers: int, num_heads: int,
                   operator: str = "MultiHeadAttention") -> int:
    """Fuse every layer whose pattern matches; returns how many layers were fused (all or none kept).

    All-or-nothing: a partly fused decoder would be slower to reason about and no faster to run, so when any
    layer does not match, the model is left as it was.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    g = _Graph(work)
    graph_inputs = {i.name for i in work.graph.input}
    if MASK_INPUT not in graph_inputs:
        return 0
    for layer in range(num_layers):
        if f"past_{layer}" not in graph_inputs:
            return 0
        if _fuse_layer(g, f"present_{layer}", f"past_{layer}", num_heads, MASK_INPUT, operator) is None:
            return 0
        g.refresh()
    from onnxruntime.transformers.onnx_model import OnnxModel

    # The new nodes were appended at the end; the unfused attention and the 4-D mask are now dead.
    fused = OnnxModel(work)
    fused.topological_sort()
    fused.prune_graph(allow_remove_graph_inputs=False)
    if not any(o.domain == "com.microsoft" for o in work.opset_import):
        work.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.CopyFrom(work)
    return num_layers


def optimize_decoder(decoder_onnx: Path, out: Path, dims: DecoderDims,
                     attention: str = "MultiHeadAttention") -> dict[str, int]:
    """onnxruntime's transformer optimizer (model_type gpt2), then `fuse_attention`; returns fused-op counts.

    opt_level 0: only the Python pattern fusions (SkipLayerNormalization, BiasGelu, LayerNormalization),
    no onnxruntime graph rewrites baked into the file, so the session still applies its own at load time.
    Attention comes from this module when onnxruntime's GPT-2 fusion does not match (BioGPT, OPT).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet_logging():  # the fusions log every unmatched pattern on the root logger
        optimized = optimize_model(str(decoder_onnx), model_type="gpt2", num_heads=dims.num_heads,
                                   hidden_size=dims.hidden_size, opt_level=0, use_gpu=False)
    counts = {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}
    if not counts.get("Attention"):
        fused = fuse_attention(optimized.model, dims.num_layers, dims.num_heads, attention)
        if fused:
            counts[attention] = fused
    # A decoder above the 2 GB protobuf limit (BioGPT-Large shape) arrives with external data; keep it so.
    optimized.save_model_to_file(str(out), use_external_data_format=needs_external_data(decoder_onnx))
    return counts
