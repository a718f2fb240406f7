"""OPT (`OPTForCausalLM`): learned positions with an offset of 2, GPT-2 byte-level BPE, pad 1 / eos 2.

Its forward accepts `position_ids` (added inside the embedding with OPT's offset of 2) and a
`DynamicCache`, so the shared `PastPresentDecoder` serves as is: the graph takes the plain 0-based
positions onnxruntime's GPT subgraph produces. OPT's tokenizer prepends `</s>` (= eos) to every prompt,
so a repetition penalty also penalises EOS, on both sides alike.
"""

from __future__ import annotations

from gen_export.export.architectures import register
from gen_export.export.architectures.base import DecoderArchitecture


@register
class OPT(DecoderArchitecture):
    class_name = "OPTForCausalLM"
    tokenizer_files = (("tokenizer.json",), ("vocab.json", "merges.txt"))
