"""Encoders for `genexport embed`: the base model of a checkpoint, whatever head it was saved with."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from transformers import PretrainedConfig, PreTrainedModel

from gen_export.export.architectures.base import Architecture


class EncoderArchitecture(Architecture):
    kind: ClassVar[str] = "encoder"
    #: The transformers class of the bare encoder (a checkpoint saved as BertForMaskedLM still loads
    #: its BertModel weights; the head is dropped).
    base_class_name: ClassVar[str]
    #: Loading the bare encoder from a checkpoint saved with a head (BertForMaskedLM, ...) leaves the head's
    #: weights unused, and a checkpoint saved without a pooler lacks it: the embedding graph uses neither (it
    #: pools last_hidden_state itself), so only encoder and embedding weights must match exactly.
    allowed_missing_keys: ClassVar[tuple[str, ...]] = (r"pooler\.",)
    allowed_unexpected_keys: ClassVar[tuple[str, ...]] = (r"(cls|lm_head|classifier|qa_outputs|pooler)\.",)

    def model_class(self) -> type[PreTrainedModel]:
        import transformers

        return getattr(transformers, self.base_class_name)

    def uses_token_type_ids(self, config: PretrainedConfig) -> bool:
        """Only models with more than one token type take `token_type_ids` as a graph input."""
        return int(getattr(config, "type_vocab_size", 0) or 0) > 1

    def max_tokens(self, config: PretrainedConfig) -> int:
        """The longest input (special tokens included) the position embeddings can hold."""
        return int(getattr(config, "max_position_embeddings", 512) or 512)

    def load_model(self, model_dir: Path) -> PreTrainedModel:
        model = super().load_model(model_dir)
        return model.to(torch.float32).eval()
