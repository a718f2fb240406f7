"""Give `convert_generation` a first-step ("init") decoder it can build for any decoder, not only GPT-2's.

Upstream: onnxruntime.transformers.convert_generation.generate_gpt2_init_decoder, checked on onnxruntime 1.32.0.

Why: the generation operators run the whole prompt through the decoder on the first step, for every beam,
and then one token per step. Only the last prompt position's logits are used, so onnxruntime builds a
separate init decoder that computes them for that position alone and attaches it to the BeamSearch /
GreedySearch / Sampling node (`init_decoder` attribute; the later steps then get a decoder whose sequence
dimension is 1). Its generator recognises one layout only: GPT-2's optimized graph, walking back from the
logits MatMul through `FastGelu` and an `Attention` node. BioGPT (exact `Gelu`, exported `BiasGelu`) and any
unoptimized decoder do not match, and it gives up with "Tried and failed to generate the init decoder".

This patch swaps in `slice_last_position`: it takes the hidden states entering the logits projection (fp32 or
quantized) and keeps the last position (`Slice` on axis 1), so the vocabulary projection, the biggest
single matrix (42384 x 1024 at the BioGPT-base shape), runs on one position instead of the whole prompt.
The graph is otherwise the decoder itself. Upstream's version slices earlier (after the last attention) and
also saves the last layer's MLP; ours is architecture-neutral and needs no fused operators.

Remove when: upstream's generator handles a BioGPT decoder (the test
`tests/test_patches.py::test_upstream_init_decoder_still_rejects_biogpt` then fails).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gen_export.patches.ort_convert_generation import check_version, swapped
from gen_export.runtime import logits_projection

LOGITS = "logits"


def slice_last_position(decoder_onnx_path: str, init_decoder_onnx_path: str,
                        use_external_data_format: bool = True) -> bool:
    """Write the decoder with its logits computed for the last input position only; False if not applicable.

    Same signature and contract as upstream's `generate_gpt2_init_decoder` (it is called in its place).
    """
    model = onnx.load_model(decoder_onnx_path, load_external_data=True)
    reader = logits_projection(model.graph)
    if reader is None:
        return False
    hidden = reader.input[0]
    sliced = f"{hidden}/last_position"
    constants = {
        "InitDecoderSliceStarts": [-1],
        "InitDecoderSliceEnds": [np.iinfo(np.int64).max],
        "InitDecoderSliceAxes": [1],
    }
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items())
    slice_node = helper.make_node("Slice", [hidden, *constants], [sliced], name="InitDecoderSliceLastPosition")
    model.graph.node.insert(list(model.graph.node).index(reader), slice_node)
    reader.input[0] = sliced
    # The logits output now has sequence length 1; say so rather than keep the decoder's symbolic name.
    for output in model.graph.output:
        if output.name == LOGITS and len(output.type.tensor_type.shape.dim) == 3:
            output.type.tensor_type.shape.dim[1].Clear()
            output.type.tensor_type.shape.dim[1].dim_value = 1
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel.save(model, init_decoder_onnx_path, save_as_external_data=use_external_data_format)
    return True


@contextlib.contextmanager
def applied() -> Iterator[None]:
    """Bind `convert_generation.generate_gpt2_init_decoder` to `slice_last_position` for the block."""
    check_version()
    from onnxruntime.transformers import convert_generation

    with swapped(convert_generation, "generate_gpt2_init_decoder", slice_last_position):
        yield
