"""The small encoder checkpoint several test files build: a random 2-layer BERT with MiniLM's tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from gen_export.embed import default_model_dir


def build_tiny_bert(folder: Path) -> Path:
    """Save a seeded random 2-layer BERT (hidden 32) and all-MiniLM-L6-v2's tokenizer into `folder`."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    BertTokenizerFast.from_pretrained(default_model_dir()).save_pretrained(folder)
    return folder
