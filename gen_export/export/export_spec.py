"""Declarative export specs in the style of optimum's `OnnxConfig`, exported with `torch.onnx.export`.

A spec says which inputs and outputs a graph has, which axes are dynamic and how dummy inputs are
made. It builds on what optimum core offers on both transformers lines (`optimum.exporters.base.
ExporterConfig`, `optimum.utils.input_generators`, `optimum.utils.normalized_config`; optimum 2.1 with
transformers 4.57, 2.3 with 5.x). The export itself is `torch.onnx.export(..., dynamo=False)` (the
TorchScript exporter) called directly by `export_with_spec`: optimum-onnx's `export()` caps transformers
below 4.58 and breaks on 5.x, and nothing it added (its mask and cache patches) is needed by genexport's
own wrappers, except the vmap-free causal mask GPT-2 needs on 4.57 (`gen_export.patches.tf_vmap_free_mask`).

`DecoderWithPastOnnxConfig` describes onnxruntime's GPT-2 decoder subgraph contract.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch
from optimum.exporters.base import ExporterConfig
from optimum.utils.input_generators import DummyInputGenerator
from optimum.utils.normalized_config import NormalizedTextConfig
from torch import nn
from transformers import PretrainedConfig

from gen_export.contract import TensorSpec  # re-exported: declared with the generation contract
from gen_export.export.architectures.base import DecoderDims, ort_position_ids, past_input_names, present_output_names

#: onnxruntime 1.20 (the one in Triton's 25.03 container) loads opset 17 / IR 8 graphs; 17 also has
#: LayerNormalization, which the transformer optimizer fuses.
DEFAULT_OPSET = 17
#: Set to 1 to write every exported graph with its weights in one external data file, as graphs above
#: protobuf's 2 GB limit are written anyway: lets CI prove that path on a tiny model.
FORCE_EXTERNAL_DATA_ENV = "GENEXPORT_FORCE_EXTERNAL_DATA"


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


class SpecExportConfig(ExporterConfig):
    """An `ExporterConfig` whose inputs and outputs come from `TensorSpec` lists (one source of truth)."""

    NORMALIZED_CONFIG_CLASS = NormalizedTextConfig
    DEFAULT_ONNX_OPSET = DEFAULT_OPSET

    def __init__(self, config: PretrainedConfig, task: str, input_specs: list[TensorSpec],
                 output_specs: list[TensorSpec], int_dtype: str) -> None:
        super().__init__(config, task=task, int_dtype=int_dtype, float_dtype="fp32")
        self.input_specs, self.output_specs = input_specs, output_specs

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict((spec.name, spec.dynamic_axes()) for spec in self.input_specs)

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict((spec.name, spec.dynamic_axes()) for spec in self.output_specs)

    @property
    def values_override(self) -> dict[str, Any] | None:
        return None


class DecoderWithPastOnnxConfig(SpecExportConfig):
    """Export config for the with-past decoder in onnxruntime's GPT-2 layout."""

    DUMMY_INPUT_GENERATOR_CLASSES = (GPT2ContractDummyInputGenerator,)

    def __init__(self, config: PretrainedConfig, dims: DecoderDims) -> None:
        super().__init__(config, "text-generation", *decoder_io_spec(dims), int_dtype="int32")
        self.dims = dims

    @property
    def values_override(self) -> dict[str, Any] | None:
        return {"use_cache": True}

    def _create_dummy_input_generator_classes(self, **kwargs: Any) -> list[DummyInputGenerator]:
        return [cls(self.task, self._normalized_config, dims=self.dims, **kwargs) for cls in
                self.DUMMY_INPUT_GENERATOR_CLASSES]


@contextlib.contextmanager
def _config_overridden(config: PretrainedConfig, values: dict[str, Any] | None) -> Iterator[None]:
    """Apply a spec's `values_override` to the model config for the export only."""
    saved = {key: getattr(config, key) for key in values or {} if hasattr(config, key)}
    try:
        for key, value in (values or {}).items():
            setattr(config, key, value)
        yield
    finally:
        for key in values or {}:
            if key in saved:
                setattr(config, key, saved[key])
            else:
                delattr(config, key)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The tracer warns about Python branches on sequence length; validation proves every shape family."""
    names = ("transformers", "torch.onnx")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def export_with_spec(module: nn.Module, spec: SpecExportConfig, path: Path, opset: int = DEFAULT_OPSET,
                     model_config: PretrainedConfig | None = None) -> Path:
    """Trace `module` with the spec's dummy inputs through `torch.onnx.export(dynamo=False)`.

    Inputs are passed positionally in the spec's order, so the module's forward must take them in that
    order. A graph above 2 GB comes out of the TorchScript exporter with one external file per tensor;
    it is rewritten with all weights in one `<name>_data` file beside the graph (as optimum did), which
    the later steps (fusion, quantization, convert_generation) carry along.
    """
    path = Path(path)
    dummy = spec.generate_dummy_inputs(framework="pt")
    args = tuple(dummy[name] for name in spec.inputs)
    dynamic_axes = dict(spec.inputs) | dict(spec.outputs)
    with _config_overridden(model_config if model_config is not None else spec._config, spec.values_override), \
            _quiet(), torch.no_grad():
        torch.onnx.export(
            module, args, str(path), input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    _consolidate_external_data(path, force=os.environ.get(FORCE_EXTERNAL_DATA_ENV) == "1")
    return path


def _consolidate_external_data(path: Path, force: bool) -> None:
    model = onnx.load(str(path), load_external_data=False)
    external = {
        entry.value
        for tensor in model.graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data if entry.key == "location"
    }
    if not external and not force:
        return
    model = onnx.load(str(path), load_external_data=True)
    for name in external:
        (path.parent / name).unlink()
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{path.name}_data", size_threshold=0 if force else 1024)
