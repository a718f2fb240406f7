"""Tiny GPT-2 and OPT checkpoints for tests, built offline from genexport's shipped corpus.

Like BioGPT's demo models (gen_export/demo.py) they are trained for a few seconds so that next-token
distributions are peaked and sentences end with EOS: random weights give near-tied logits, where any
rounding flips an argmax and token parity proves nothing. Each has its own byte-level BPE tokenizer
trained with the `tokenizers` library and saved as `GPT2TokenizerFast` (vocab.json, merges.txt,
tokenizer.json), the files real GPT-2 and OPT checkpoints ship.

Special tokens follow the real models: GPT-2 has only `<|endoftext|>` (bos = eos = unk, no pad); OPT
has `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3 and prepends `</s>` to every text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel

from gen_export.demo import CORPUS, cached_or_shipped, training_versions_key

FIXTURE_VERSION = 1


@dataclass(frozen=True)
class FixtureShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    max_positions: int
    vocab_size: int  # BPE target size (special tokens included)
    train_steps: int


#: Different head counts and widths from BioGPT's tiny demo, so nothing passes by sharing its shape.
SHAPES: dict[str, FixtureShape] = {
    "gpt2": FixtureShape(hidden_size=64, num_layers=2, num_heads=4, max_positions=128, vocab_size=600,
                         train_steps=300),
    "opt": FixtureShape(hidden_size=48, num_layers=2, num_heads=2, max_positions=128, vocab_size=520,
                        train_steps=300),
}

GPT2_SPECIALS = ("<|endoftext|>",)
OPT_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def _corpus_lines(corpus: Path) -> list[str]:
    return [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_tokenizer(kind: str, out_dir: Path, corpus: Path = CORPUS) -> Path:
    """Train a byte-level BPE on the corpus and save it as GPT2TokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    specials = GPT2_SPECIALS if kind == "gpt2" else OPT_SPECIALS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SHAPES[kind].vocab_size, special_tokens=list(specials), show_progress=False,
        # Every byte is in the vocabulary, so no text is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_corpus_lines(corpus), trainer=trainer)
    if kind == "opt":
        # OPT's tokenizer prepends `</s>` to every text; the post-processor is how a fast tokenizer does it.
        tokenizer.post_processor = processors.TemplateProcessing(
            single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    limit = SHAPES[kind].max_positions
    if kind == "gpt2":
        end = "<|endoftext|>"
        fast = GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=end, eos_token=end, unk_token=end,
                                 model_max_length=limit)
    else:
        fast = GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token="</s>", eos_token="</s>",
                                 unk_token="<unk>", pad_token="<pad>", model_max_length=limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)  # writes tokenizer.json and, for a BPE model, vocab.json + merges.txt
    return out_dir


def _config(kind: str, vocab_size: int, eos: int, pad: int | None) -> PretrainedConfig:
    from transformers import GPT2Config, OPTConfig

    s = SHAPES[kind]
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=s.hidden_size, n_layer=s.num_layers,
                          n_head=s.num_heads, n_positions=s.max_positions, bos_token_id=eos, eos_token_id=eos,
                          use_cache=True)
    return OPTConfig(vocab_size=vocab_size, hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
                     num_attention_heads=s.num_heads, ffn_dim=4 * s.hidden_size,
                     max_position_embeddings=s.max_positions, word_embed_proj_dim=s.hidden_size,
                     pad_token_id=pad, bos_token_id=eos, eos_token_id=eos, use_cache=True)


def train_briefly(model: PreTrainedModel, sequences: list[list[int]], steps: int, seed: int,
                  lr: float = 3e-3, batch_size: int = 32) -> float:
    """Next-token training on whole lines (right-padded, padding excluded from loss); returns last loss.

    The mask comes from each line's length, not from `ids != pad`: GPT-2's pad is its EOS, and the EOS
    that ends every line must be learned.
    """
    width = max(map(len, sequences))
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic reductions; the machine's cores are shared
    try:
        torch.manual_seed(seed)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(seed)
        loss = torch.tensor(float("nan"))
        for _ in range(steps):
            batch = torch.randint(0, len(sequences), (batch_size,), generator=generator)
            loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return float(loss.detach())


def build_checkpoint(kind: str, out_dir: Path, seed: int = 0, corpus: Path = CORPUS) -> Path:
    """Tokenizer + model trained briefly on the corpus, saved with save_pretrained."""
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast, OPTForCausalLM

    build_tokenizer(kind, out_dir, corpus)
    tokenizer = GPT2TokenizerFast.from_pretrained(out_dir)
    eos = int(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id
    # Every line ends with EOS, so the model learns to stop after a sentence.
    sequences = [tokenizer(line)["input_ids"] + [eos] for line in _corpus_lines(corpus)]
    config = _config(kind, len(tokenizer), eos, pad)
    torch.manual_seed(seed)
    model_cls: Callable[..., PreTrainedModel] = GPT2LMHeadModel if kind == "gpt2" else OPTForCausalLM
    model = model_cls(config)
    loss = train_briefly(model, sequences, SHAPES[kind].train_steps, seed)
    if pad is not None:
        model.generation_config.pad_token_id = pad
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "genexport_demo.json").write_text(json.dumps({
        "demo": True, "kind": kind, "seed": seed, "final_loss": round(loss, 4), "shape": asdict(SHAPES[kind]),
        "trained_with": training_versions_key(),
    }, indent=2))
    return out_dir


def _version_hash(kind: str) -> str:
    digest = hashlib.sha256(CORPUS.read_bytes())
    digest.update(json.dumps(asdict(SHAPES[kind]), sort_keys=True).encode())
    digest.update(f"{kind}-{FIXTURE_VERSION}".encode())
    return digest.hexdigest()[:12]


def cached_checkpoint(kind: str, seed: int = 0) -> Path:
    """Seed 0: genexport's shipped copy (the same weights on every transformers line, see demo.SHIPPED_DIR);
    other seeds: trained once into the demo cache, keyed by the torch and transformers versions."""
    if kind not in SHAPES:
        raise ValueError(f"unknown fixture kind {kind!r}; use one of {sorted(SHAPES)}")
    return cached_or_shipped(kind, seed, _version_hash(kind), lambda staging: build_checkpoint(kind, staging, seed))


class WrongMinLengthSession:
    """Feeds a graph a min_length that generate does not get: a deliberate flag mismatch, so parity tests
    can show they fail."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def get_inputs(self) -> Any:
        return self._session.get_inputs()

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        min_length = feed["input_ids"].shape[1] + 10
        return self._session.run(names, dict(feed) | {"min_length": np.array([min_length], np.int32)})
