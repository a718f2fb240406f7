"""Smaller decoder weights inside the fused graph: int8 (dynamic MatMul quantization) and int4 (MatMulNBits).

The fp32 graph at the BioGPT-base shape already runs near the cost of streaming its weights once per
decoding step, so speed has to come from moving fewer bytes. Exact token parity cannot hold for
quantized weights: the fp32 graph is still built and must pass the parity matrix against `generate`,
and the quantized graph's agreement with it (exact sequences and per-token) is measured on the same
cases and recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gen_export.errors import GenExportError
from gen_export.options import Precision
from gen_export.quiet import quiet_logging
from gen_export.runtime import logits_projection


def check_precision(precision: Precision, sampling: bool) -> None:
    if precision is Precision.FP16:
        raise GenExportError(
            "fp16 needs CUDA: onnxruntime's generation operators run float32 only on CPU",
            "use --precision fp32, int8 or int4 on CPU",
        )
    if sampling and precision is not Precision.FP32:
        raise GenExportError(
            f"--precision {precision} is not verified for sampling graphs",
            "use --precision fp32 with --search sampling",
        )


def _logits_matmul(model: Any) -> str | None:
    """The MatMul that produces `logits` (the tied output embedding), if there is one."""
    node = logits_projection(model.graph)
    return node.name if node is not None and node.op_type == "MatMul" else None


def quantize_decoder(decoder_onnx: Path, out: Path, precision: str | Precision,
                     keep_logits_fp32: bool = True) -> Path:
    """Quantize the exported decoder's MatMul weights; the graph contract (names, dtypes) is unchanged.

    `keep_logits_fp32` (default) leaves the vocabulary projection unquantized: it decides the beam ranking.
    On the trained demo models (parity matrix, 24 sequences each) quantizing it too left int4 at 14-22/24
    sequences identical to fp32 and int8 at 21-24/24; keeping it in fp32 gave 23-24/24 for both. It costs
    speed: at the BioGPT-base shape it is 12.5% of the parameters (173 MB in fp32).
    """
    import onnx

    precision = Precision(precision)
    model = onnx.load(str(decoder_onnx))
    exclude = [name for name in [_logits_matmul(model)] if name] if keep_logits_fp32 else []
    with quiet_logging():
        # Importing matmul_nbits_quantizer calls logging.basicConfig(level=INFO): a handler and level on the root
        # logger that would print every node it skips. Imported here, both are undone when the block ends.
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    with quiet_logging():  # the quantizers advise pre-processing on the root logger, every time
        if precision is Precision.INT8:
            # Per-channel: one scale per output column; per-tensor scales lost far more agreement by hand.
            # DefaultTensorType: ONNX shape inference cannot type the outputs of contrib operators
            # (MultiHeadAttention after `optimize_decoder`); everything here is float32.
            quantize_dynamic(str(decoder_onnx), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        elif precision is Precision.INT4:
            quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True,
                                             nodes_to_exclude=exclude,
                                             accuracy_level=4)  # int8 activations: the fast CPU kernel
            quantizer.process()
            quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
        else:
            raise ValueError(f"nothing to quantize for {precision}")
    return out
