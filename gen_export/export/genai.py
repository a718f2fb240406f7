"""`genai_config.json` beside `decoder.onnx`, so onnxruntime-genai runs genexport's decoder as exported.

genexport's decoder follows onnxruntime's GPT-2 subgraph contract (combined past `(2, batch, heads, past, head_dim)`
per layer, int32 ids), which is onnxruntime-genai's model type `gpt2`. Every model field comes from what the
export already knows (the dims in the manifest, the graph's input and output names); the search defaults come
from the checkpoint's generation config, read the way `generate` reads it, so genai's defaults are generate's.

Tokenizer: genai reads a Hugging Face `tokenizer.json` (fast tokenizers: GPT-2, OPT). BioGPT's tokenizer is Moses
pre-tokenization + BPE in Python (`BioGptTokenizer`, no fast variant), which genai's tokenizer cannot express:
for such checkpoints no tokenizer is written and genai is driven with token ids in and out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gen_export.errors import GenExportError
from gen_export.export.architectures.base import DecoderDims

GENAI_CONFIG = "genai_config.json"
#: What genai's tokenizer reads beside genai_config.json (tokenizer_config.json names the class and specials).
GENAI_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
GENAI_MODEL_TYPE = "gpt2"  # combined past/present per layer: the GPT-2 subgraph contract


@dataclass(frozen=True)
class GenaiFiles:
    """What was written for onnxruntime-genai, for the manifest."""

    config: str
    model_type: str
    tokenizer: bool
    tokenizer_note: str
    search: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_defaults(checkpoint_dir: Path, context_length: int) -> dict[str, Any]:
    """genai's search block from the checkpoint's generation config (transformers' defaults where it is silent).

    max_length is generate's (20 unless the checkpoint says otherwise), capped at the model's positions; genai's
    early_stopping is a boolean, so transformers' "never" becomes False.
    """
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(str(checkpoint_dir))
    except OSError:  # no generation_config.json: generate uses the defaults too
        generation = GenerationConfig()
    early = generation.early_stopping
    return {
        "do_sample": bool(generation.do_sample),
        "num_beams": int(generation.num_beams or 1),
        "num_return_sequences": int(generation.num_return_sequences or 1),
        "max_length": min(int(generation.max_length or 20), context_length),
        "min_length": int(generation.min_length or 0),
        "length_penalty": float(generation.length_penalty if generation.length_penalty is not None else 1.0),
        "early_stopping": early is True,
        "repetition_penalty": float(generation.repetition_penalty or 1.0),
        "no_repeat_ngram_size": int(generation.no_repeat_ngram_size or 0),
        "diversity_penalty": float(generation.diversity_penalty or 0.0),
        "temperature": float(generation.temperature if generation.temperature is not None else 1.0),
        "top_k": int(generation.top_k if generation.top_k is not None else 50),
        "top_p": float(generation.top_p if generation.top_p is not None else 1.0),
        "past_present_share_buffer": False,  # genexport's past grows per step (no shared buffer)
    }


def _name_pattern(names: list[str], stem: str, count: int) -> str:
    """`past_%d` from past_0..past_{L-1}, checked against the graph."""
    expected = [f"{stem}_{i}" for i in range(count)]
    found = sorted((n for n in names if re.fullmatch(rf"{stem}_\d+", n)), key=lambda n: int(n.rsplit("_", 1)[1]))
    if found != expected:
        raise GenExportError(f"decoder {stem} tensors are {found[:3]}..., not {stem}_0..{stem}_{count - 1}",
                             "report this as a genexport bug")
    return f"{stem}_%d"


def genai_config(dims: DecoderDims, decoder_file: str, io: dict[str, list[dict[str, Any]]],
                 search: dict[str, Any]) -> dict[str, Any]:
    """The genai_config.json document for a genexport decoder (model type gpt2)."""
    inputs = [t["name"] for t in io["inputs"]]
    outputs = [t["name"] for t in io["outputs"]]
    for name in ("input_ids", "position_ids", "attention_mask"):
        if name not in inputs:
            raise GenExportError(f"decoder has no input {name}", "report this as a genexport bug")
    return {
        "model": {
            "type": GENAI_MODEL_TYPE,
            "bos_token_id": dims.bos_token_id if dims.bos_token_id is not None else dims.eos_token_id,
            "eos_token_id": dims.eos_token_id,
            "pad_token_id": dims.pad_token_id,
            "vocab_size": dims.vocab_size,
            "context_length": dims.max_positions,
            "decoder": {
                "filename": decoder_file,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "hidden_size": dims.hidden_size,
                "num_attention_heads": dims.num_heads,
                "num_key_value_heads": dims.num_heads,
                "head_size": dims.head_dim,
                "num_hidden_layers": dims.num_layers,
                "inputs": {"input_ids": "input_ids", "position_ids": "position_ids",
                           "attention_mask": "attention_mask",
                           "past_names": _name_pattern(inputs, "past", dims.num_layers)},
                "outputs": {"logits": "logits", "present_names": _name_pattern(outputs, "present", dims.num_layers)},
            },
        },
        "search": search,
    }


def _write_tokenizer(checkpoint_dir: Path, output_dir: Path) -> tuple[bool, str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    if not tokenizer.is_fast:
        return False, (f"{type(tokenizer).__name__} has no tokenizer.json form (e.g. BioGPT's Moses + BPE): "
                       "genai takes and returns token ids; tokenize with transformers")
    tokenizer.save_pretrained(str(output_dir))
    # save_pretrained also writes vocab/merges files on some lines; genai reads only these.
    written = {p.name for p in output_dir.iterdir()}
    if "tokenizer.json" not in written:
        return False, f"{type(tokenizer).__name__} wrote no tokenizer.json"
    return True, "tokenizer.json (Hugging Face fast tokenizer), read by genai's og.Tokenizer"


def write_genai_files(checkpoint_dir: Path, output_dir: Path, dims: DecoderDims,
                      decoder_file: str = "decoder.onnx") -> GenaiFiles:
    """Write genai_config.json (and tokenizer files where the tokenizer allows) into `output_dir`."""
    import json

    from gen_export.runtime import graph_io

    search = search_defaults(checkpoint_dir, dims.max_positions)
    config = genai_config(dims, decoder_file, graph_io(output_dir / decoder_file), search)
    (output_dir / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    tokenizer, note = _write_tokenizer(checkpoint_dir, output_dir)
    return GenaiFiles(GENAI_CONFIG, GENAI_MODEL_TYPE, tokenizer, note, search)
