"""BioGPT (`BioGptForCausalLM`): GPT-2-like, learned positions with an offset of 2, Moses+BPE tokenizer.

Its forward accepts `position_ids` and a `DynamicCache`, so the shared `PastPresentDecoder` serves as
is; BioGPT adds its position offset inside the embedding, so the graph takes plain 0-based positions
exactly as onnxruntime's GPT subgraph produces them.
"""

from __future__ import annotations

from gen_export.export.architectures import register
from gen_export.export.architectures.base import DecoderArchitecture


@register
class BioGpt(DecoderArchitecture):
    class_name = "BioGptForCausalLM"
    tokenizer_files = (("vocab.json", "merges.txt"),)
