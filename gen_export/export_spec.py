"""Declarative export specs in the style of optimum's `model_configs.py`.

`DecoderWithPastOnnxConfig` describes onnxruntime's GPT-2 decoder subgraph contract: which inputs
and outputs exist, which axes are dynamic, and how dummy inputs are made. optimum's `export()`
matches config inputs to the forward's parameter names; `PastPresentDecoder` exposes
`past_0..past_{L-1}` as named parameters through its signature, so optimum's machinery is used as is.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from optimum.exporters.onnx.base import OnnxConfig
from optimum.utils import DummyInputGenerator, NormalizedTextConfig
from transformers import PretrainedConfig

from gen_export.architectures.base import DecoderDims, ort_position_ids, past_input_names, present_output_names

#: onnxruntime 1.20 (the one in Triton's 25.03 container) loads opset 17 / IR 8 graphs; 17 also has
#: LayerNormalization, which the transformer optimizer fuses.
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and dims (int = static, str = dynamic axis)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


def decoder_io_spec(dims: DecoderDims) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """onnxruntime's GPT-2 subgraph contract (see `convert_generation.verify_gpt2_subgraph`).

    Past/present dims 0, 2, 4 and the logits' vocabulary dim must stay static: the BeamSearch op
    rejects a subgraph whose past dim 0 is not 2 at session creation.
    """
    past_shape = (2, "batch_size", dims.num_heads, "past_sequence_length", dims.head_dim)
    present_shape = (2, "batch_size", dims.num_heads, "total_sequence_length", dims.head_dim)
    inputs = [
        TensorSpec("input_ids", "int32", ("batch_size", "sequence_length")),
        TensorSpec("position_ids", "int32", ("batch_size", "sequence_length")),
        TensorSpec("attention_mask", "int32", ("batch_size", "total_sequence_length")),
        *(TensorSpec(name, "float32", past_shape) for name in past_input_names(dims.num_layers)),
    ]
    outputs = [
        TensorSpec("logits", "float32", ("batch_size", "sequence_length", dims.vocab_size)),
        *(TensorSpec(name, "float32", present_shape) for name in present_output_names(dims.num_layers)),
    ]
    return inputs, outputs


class GPT2ContractDummyInputGenerator(DummyInputGenerator):
    """Left-padded dummy inputs with a non-empty past, so the trace sees every branch it must keep."""

    SUPPORTED_INPUT_NAMES = ("input_ids", "position_ids", "attention_mask", "past_")

    def __init__(
        self,
        task: str,
        normalized_config: Any,
        dims: DecoderDims,
        batch_size: int = 2,
        sequence_length: int = 3,
        past_sequence_length: int = 4,
        **kwargs: Any,
    ) -> None:
        self.task = task
        self.dims = dims
        self.batch_size = batch_size
        self.sequence_length = sequence_length
        self.past_sequence_length = past_sequence_length
        total = past_sequence_length + sequence_length
        mask = torch.ones(batch_size, total, dtype=torch.int64)
        mask[0, :1] = 0  # first row left-padded by one token
        self._mask = mask
        self._positions = ort_position_ids(mask)[:, past_sequence_length:]

    def generate(
        self, input_name: str, framework: str = "pt", int_dtype: str = "int32", float_dtype: str = "fp32"
    ) -> Any:
        generator = torch.Generator().manual_seed(0)
        if input_name == "input_ids":
            value = torch.randint(
                3, self.dims.vocab_size, (self.batch_size, self.sequence_length), generator=generator
            ).to(torch.int32)
        elif input_name == "position_ids":
            value = self._positions.to(torch.int32)
        elif input_name == "attention_mask":
            value = self._mask.to(torch.int32)
        else:
            shape = (2, self.batch_size, self.dims.num_heads, self.past_sequence_length, self.dims.head_dim)
            value = torch.randn(shape, generator=generator)
        return value.numpy() if framework == "np" else value


class DecoderWithPastOnnxConfig(OnnxConfig):
    """optimum export config for the with-past decoder in onnxruntime's GPT-2 layout."""

    NORMALIZED_CONFIG_CLASS = NormalizedTextConfig
    DUMMY_INPUT_GENERATOR_CLASSES = (GPT2ContractDummyInputGenerator,)
    DEFAULT_ONNX_OPSET = DEFAULT_OPSET

    def __init__(self, config: PretrainedConfig, dims: DecoderDims) -> None:
        super().__init__(config, task="text-generation", int_dtype="int32", float_dtype="fp32")
        self.dims = dims
        self.input_specs, self.output_specs = decoder_io_spec(dims)

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict((spec.name, spec.dynamic_axes()) for spec in self.input_specs)

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict((spec.name, spec.dynamic_axes()) for spec in self.output_specs)

    @property
    def values_override(self) -> dict[str, Any] | None:
        return {"use_cache": True}

    def _create_dummy_input_generator_classes(self, **kwargs: Any) -> list[DummyInputGenerator]:
        return [cls(self.task, self._normalized_config, dims=self.dims, **kwargs) for cls in
                self.DUMMY_INPUT_GENERATOR_CLASSES]
