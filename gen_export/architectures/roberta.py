"""RoBERTa-style encoders: BPE tokenizer, a single token type (so no `token_type_ids` input)."""

from __future__ import annotations

from gen_export.architectures import register
from gen_export.architectures.encoder_base import EncoderArchitecture


class _Roberta(EncoderArchitecture):
    base_class_name = "RobertaModel"
    tokenizer_files = (("tokenizer.json",), ("vocab.json", "merges.txt"))


@register
class RobertaModel(_Roberta):
    class_name = "RobertaModel"


@register
class RobertaForMaskedLM(_Roberta):
    class_name = "RobertaForMaskedLM"
