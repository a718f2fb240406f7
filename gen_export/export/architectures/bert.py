"""BERT family encoders (BERT, BioLinkBERT, MiniLM): one module, several saved class names."""

from __future__ import annotations

from gen_export.export.architectures import register
from gen_export.export.architectures.encoder_base import EncoderArchitecture


class _Bert(EncoderArchitecture):
    base_class_name = "BertModel"
    tokenizer_files = (("tokenizer.json",), ("vocab.txt",))


@register
class BertModel(_Bert):
    class_name = "BertModel"


@register
class BertForMaskedLM(_Bert):
    class_name = "BertForMaskedLM"


@register
class BertForPreTraining(_Bert):
    class_name = "BertForPreTraining"
