"""RoBERTa-style encoders: BPE tokenizer, a single token type (so no `token_type_ids` input)."""

from __future__ import annotations

from transformers import PretrainedConfig

from gen_export.export.architectures import register
from gen_export.export.architectures.encoder_base import EncoderArchitecture


class _Roberta(EncoderArchitecture):
    base_class_name = "RobertaModel"
    tokenizer_files = (("tokenizer.json",), ("vocab.json", "merges.txt"))

    def max_tokens(self, config: PretrainedConfig) -> int:
        # RoBERTa numbers positions from padding_idx + 1, so that many table rows are never usable.
        return int(config.max_position_embeddings) - int(config.pad_token_id) - 1


@register
class RobertaModel(_Roberta):
    class_name = "RobertaModel"


@register
class RobertaForMaskedLM(_Roberta):
    class_name = "RobertaForMaskedLM"
