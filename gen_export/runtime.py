"""onnxruntime sessions and graph introspection shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

_ONNX_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.STRING: "string",
}


def make_session(path: Path, threads: int | None = None, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def graph_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, element types and dims (ints or axis names) of a graph's inputs and outputs."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        described = []
        for value in values:
            tensor = value.type.tensor_type
            dims: list[int | str] = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
            described.append({"name": value.name, "dtype": _ONNX_TYPES.get(tensor.elem_type, str(tensor.elem_type)),
                              "dims": dims})
        return described

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


#: A protobuf file cannot exceed 2 GB: above this size the weights go to an external data file.
EXTERNAL_DATA_THRESHOLD = 1_900_000_000


def needs_external_data(path: Path) -> bool:
    """True when a graph is near protobuf's 2 GB limit or already keeps its weights in a file beside it."""
    return path.stat().st_size > EXTERNAL_DATA_THRESHOLD or any(
        p.name.startswith(path.name) and p != path for p in path.parent.iterdir())


def check_model(path: Path) -> None:
    """onnx.checker on a path, so graphs with external data over 2 GB are checked too."""
    onnx.checker.check_model(str(path))


#: The logits projection in each form genexport produces: fp32 MatMul, int4 MatMulNBits and int8, either fused
#: (DynamicQuantizeMatMul) or as DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul.
LOGITS_PROJECTIONS = {"MatMul", "MatMulNBits", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
#: Ops walked through between the projection and `logits`.
LOGITS_PASS_THROUGH = {"Reshape", "Identity", "Cast", "Mul", "MatMulInteger"}


def logits_projection(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The node whose input 0 is the hidden state entering the `logits` projection, or None if not found.

    The walk stops at the projection itself: a Reshape between the final layer norm and the projection
    (GPT-2's `view(output_shape)`, built from the input's sequence length) is not part of it.
    """
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get("logits")
    for _ in range(8):  # a few ops at most; a longer walk means an unknown layout
        if node is None:
            return None
        if node.op_type in LOGITS_PROJECTIONS:
            return node
        if node.op_type not in LOGITS_PASS_THROUGH:
            return None
        # Follow the activation, not a constant scale (the Mul of the int8 chain has the Cast on one side,
        # scales on the other): the input produced by an op of the chain.
        inputs = [producers.get(name) for name in node.input]
        node = next((p for p in inputs if p is not None and p.op_type in LOGITS_PROJECTIONS | LOGITS_PASS_THROUGH),
                    None)
    return None
