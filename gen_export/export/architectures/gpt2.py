"""GPT-2 (`GPT2LMHeadModel`): learned 0-based positions, byte-level BPE tokenizer, no pad token.

Its forward accepts `position_ids` and a `DynamicCache`, so the shared `PastPresentDecoder` serves as
is. The config says n_layer/n_head/n_embd/n_positions, names `DecoderArchitecture.dims` already reads.
GPT-2 has no pad token: `dims` then uses pad = eos (`<|endoftext|>`), which is also what the generation
operators and `generate` fall back to, and the parity harness cuts every sequence at that one id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gen_export.export.architectures import register
from gen_export.export.architectures.base import DecoderArchitecture


@register
class GPT2(DecoderArchitecture):
    class_name = "GPT2LMHeadModel"
    tokenizer_files = (("tokenizer.json",), ("vocab.json", "merges.txt"))

    def load_tokenizer(self, model_dir: Path) -> Any:
        tokenizer = super().load_tokenizer(model_dir)
        if tokenizer.pad_token is None:
            # GPT-2 ships no pad token; left-padding a batch needs one, and eos is the id `dims` and the
            # generation operator already use as pad. Padded positions are masked, so the id is inert.
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
