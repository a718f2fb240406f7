"""What an architecture module provides, and the shared GPT-2-contract wrapper.

onnxruntime's GPT-2 generation operators (BeamSearch, GreedySearch, Sampling) call a decoder
subgraph with inputs `input_ids, position_ids, attention_mask, past_0..past_{L-1}` (int32 ids) and
expect `logits, present_0..present_{L-1}`, each past/present being key and value stacked into one
`(2, batch, heads, seq, head_dim)` tensor. `PastPresentDecoder` adapts any transformers causal LM
whose forward takes `position_ids` and a `DynamicCache` to that contract.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
from abc import ABC
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache

from gen_export.errors import GenExportError
from gen_export.validate import one_line


@dataclass(frozen=True)
class DecoderDims:
    """The numbers the exported graph and the generation operators are built from."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int
    pad_token_id: int
    eos_token_id: int
    bos_token_id: int | None


class Architecture(ABC):
    """One transformers model class that genexport knows how to export.

    Subclasses are small: they name the class, the tokenizer files it needs and, where the config
    uses unusual attribute names, how to read its dimensions.
    """

    class_name: ClassVar[str]
    kind: ClassVar[str]  # "decoder" or "encoder"
    #: Alternative sets of tokenizer files; one complete set must be present in the model folder.
    tokenizer_files: ClassVar[tuple[tuple[str, ...], ...]]
    #: transformers config attribute names, tried in order (GPT-2 says n_layer, most say num_hidden_layers).
    layers_attr: ClassVar[tuple[str, ...]] = ("num_hidden_layers", "n_layer")
    heads_attr: ClassVar[tuple[str, ...]] = ("num_attention_heads", "n_head")
    hidden_attr: ClassVar[tuple[str, ...]] = ("hidden_size", "n_embd")
    positions_attr: ClassVar[tuple[str, ...]] = ("max_position_embeddings", "n_positions")
    vocab_attr: ClassVar[tuple[str, ...]] = ("vocab_size",)
    intermediate_attr: ClassVar[tuple[str, ...]] = ("intermediate_size", "ffn_dim", "n_inner")
    #: Weights a checkpoint may lack / hold beyond the model class without being broken (regular expressions).
    allowed_missing_keys: ClassVar[tuple[str, ...]] = ()
    allowed_unexpected_keys: ClassVar[tuple[str, ...]] = ()

    def size_attributes(self) -> dict[str, tuple[str, ...]]:
        """The config.json names of each size that is bounds-checked before loading (checkpoint.config_sizes)."""
        return {"layers": self.layers_attr, "heads": self.heads_attr, "hidden": self.hidden_attr,
                "vocab": self.vocab_attr, "positions": self.positions_attr, "intermediate": self.intermediate_attr}

    def model_class(self) -> type[PreTrainedModel]:
        import transformers

        return getattr(transformers, self.class_name)

    def load_model(self, model_dir: Path) -> PreTrainedModel:
        """Load float32 weights in eval mode; eager attention keeps padded batches exact in the trace.

        The weights must be exactly what the config describes: a weight the model needs but the checkpoint
        lacks would be randomly initialised (and parity would still pass, both sides using the same broken
        model), a weight the model does not use means config and weights disagree. Both are refused, naming
        the keys; tied weights (lm_head = embeddings) are not reported by transformers.
        """
        model_cls = self.model_class()
        has_safetensors = any(model_dir.glob("*.safetensors"))
        try:
            with warnings.catch_warnings(), _quiet_transformers():
                warnings.simplefilter("ignore")
                model, info = model_cls.from_pretrained(
                    model_dir,
                    local_files_only=True,
                    dtype=torch.float32,
                    attn_implementation="eager",
                    use_safetensors=has_safetensors,
                    trust_remote_code=False,
                    output_loading_info=True,
                )
        except GenExportError:
            raise
        except Exception as error:  # untrusted files through third-party loaders: every failure is the input's
            raise GenExportError(
                f"cannot load the weights in {model_dir} ({_load_problem(error)})",
                "re-save the model with save_pretrained (safetensors); config.json must describe the saved weights",
            ) from None
        self.check_loading_info(info, model_dir)
        return model.eval()

    def check_loading_info(self, info: dict[str, Any], model_dir: Path) -> None:
        def keys(kind: str, allowed: tuple[str, ...]) -> list[str]:
            found = [k if isinstance(k, str) else str(k[0]) for k in info.get(kind) or []]
            return sorted(k for k in found if not any(re.match(pattern, k) for pattern in allowed))

        problems = []
        for kind, allowed, what in (("missing_keys", self.allowed_missing_keys, "missing from the checkpoint"),
                                    ("unexpected_keys", self.allowed_unexpected_keys, "not used by the model"),
                                    ("mismatched_keys", (), "of the wrong shape")):
            if found := keys(kind, allowed):
                shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
                problems.append(f"{len(found)} weight(s) {what}: {shown}")
        if problems:
            raise GenExportError(
                f"config.json and the weights in {model_dir} disagree ({'; '.join(problems)})",
                "export the checkpoint exactly as save_pretrained wrote it (config.json must match the weights)",
            )

    def load_tokenizer(self, model_dir: Path) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)

    def missing_tokenizer_files(self, model_dir: Path) -> tuple[str, ...] | None:
        """None when one complete set of tokenizer files is present, else the first expected set."""
        for option in self.tokenizer_files:
            if all((model_dir / name).is_file() for name in option):
                return None
        return self.tokenizer_files[0]


class DecoderArchitecture(Architecture):
    kind: ClassVar[str] = "decoder"

    def dims(self, config: PretrainedConfig) -> DecoderDims:
        def first(names: tuple[str, ...]) -> int:
            for name in names:
                if getattr(config, name, None) is not None:
                    return int(getattr(config, name))
            raise GenExportError(f"config.json has none of {', '.join(names)}", "fix the checkpoint's config.json")

        hidden = first(self.hidden_attr)
        heads = first(self.heads_attr)
        eos = config.eos_token_id
        pad = config.pad_token_id if config.pad_token_id is not None else eos
        if eos is None:
            raise GenExportError("config.json sets no eos_token_id", "add eos_token_id to config.json")
        return DecoderDims(
            num_layers=first(self.layers_attr),
            num_heads=heads,
            head_dim=hidden // heads,
            hidden_size=hidden,
            vocab_size=int(config.vocab_size),
            max_positions=first(self.positions_attr),
            pad_token_id=int(pad),
            eos_token_id=int(eos),
            bos_token_id=config.bos_token_id,
        )

    def wrap(self, model: PreTrainedModel) -> PastPresentDecoder:
        return PastPresentDecoder(model, self.dims(model.config))


def ort_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions as onnxruntime's GPT subgraph builds them: count real tokens from 0, padding gets 0."""
    mask = attention_mask.to(torch.int64)
    return ((mask.cumsum(-1) - 1) * mask).clamp(min=0)


def past_input_names(num_layers: int) -> list[str]:
    return [f"past_{i}" for i in range(num_layers)]


def present_output_names(num_layers: int) -> list[str]:
    return [f"present_{i}" for i in range(num_layers)]


def cache_keyword(model: PreTrainedModel) -> str:
    """The forward keyword (and output field) that carries the cache: `cache` from transformers 5.24 on,
    `past_key_values` before (the old name is removed in 5.40). Read from the signature, not the version."""
    parameters = inspect.signature(type(model).forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise GenExportError(
        f"{type(model).__name__}.forward takes neither `cache` nor `past_key_values`",
        "use a transformers version genexport supports (see README's compatibility table)",
    )


class PastPresentDecoder(nn.Module):
    """`forward(input_ids, position_ids, attention_mask, *past) -> (logits, *present)`.

    The variadic `*past` keeps the forward honest for any layer count; exporters that bind inputs by
    parameter name see `past_0..past_{L-1}` through an explicit signature set
    on the instance, so no per-layer-count class has to be generated.
    """

    def __init__(self, model: PreTrainedModel, dims: DecoderDims) -> None:
        super().__init__()
        self.model = model
        self.config = model.config  # the export spec overrides values (use_cache) on it for the trace
        self.dims = dims
        names = ["input_ids", "position_ids", "attention_mask", *past_input_names(dims.num_layers)]
        signature = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        )
        bound = type(self).forward.__get__(self)

        def forward(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return bound(*args)

        forward.__signature__ = signature  # type: ignore[attr-defined]
        self.forward = forward  # type: ignore[method-assign]
        self.cache_keyword = cache_keyword(model)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        if len(past) != self.dims.num_layers:
            raise ValueError(f"expected {self.dims.num_layers} past tensors, got {len(past)}")
        cache = DynamicCache()
        for layer, layer_past in enumerate(past):
            # .update() fills the cache the same way on transformers 4.57 and 5.x.
            cache.update(layer_past[0], layer_past[1], layer)
        outputs = self.model(
            input_ids=input_ids.to(torch.int64),
            position_ids=position_ids.to(torch.int64),
            attention_mask=attention_mask.to(torch.int64),
            use_cache=True,
            return_dict=True,
            **{self.cache_keyword: cache},
        )
        returned = outputs[self.cache_keyword]
        presents = [torch.stack((layer.keys, layer.values)) for layer in returned.layers]
        return (outputs.logits, *presents)

    def empty_past(self, batch: int) -> list[torch.Tensor]:
        d = self.dims
        return [torch.zeros(2, batch, d.num_heads, 0, d.head_dim) for _ in range(d.num_layers)]


def _load_problem(error: BaseException) -> str:
    """One line for a loader failure; a pickle refused by weights_only loading gets its own words."""
    text = one_line(error)
    mismatch = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
    if mismatch:
        return f"weights of another shape than config.json says: {mismatch[0][:200]}"
    if "ignore_mismatched_sizes" in text:
        # transformers 5.x logs its size-mismatch report and raises only this pointer to it.
        return "weights of another shape than config.json says (transformers refused to load them)"
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any("weights_only" in str(e) or "Unpickl" in type(e).__name__ for e in chain):
        return "a .bin file that is not a plain PyTorch weights file; it was not executed"
    return text


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers logs missing/unexpected weights as warnings; genexport turns them into an error instead.

    A filter, not a level: transformers runs an extra tensor-parallel check (and logs more) when its logger's
    level is raised.
    """
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers.modeling_utils")
    below_error = _BelowError()
    logger.addFilter(below_error)
    # transformers 5 draws a "Loading weights" progress bar on stderr; genexport shows its own steps.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(below_error)
        if bar_was_enabled:
            hf_logging.enable_progress_bar()


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def read_config(model_dir: Path) -> PretrainedConfig:
    return AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
