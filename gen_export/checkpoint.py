"""Open a local model folder and check it before any export work starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_export.architectures import get_architecture, supported
from gen_export.architectures.base import Architecture
from gen_export.artifacts import sha256_files
from gen_export.errors import GenExportError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True)
class Checkpoint:
    """A validated local checkpoint: its folder, architecture and raw config."""

    path: Path
    class_name: str
    architecture: Architecture
    config: dict[str, Any]

    def weight_files(self) -> list[Path]:
        return sorted(p for pattern in WEIGHT_PATTERNS for p in self.path.glob(pattern))

    def weights_sha256(self) -> str:
        return sha256_files(self.weight_files())

    def describe(self) -> dict[str, Any]:
        demo = self.path / "genexport_demo.json"
        return {
            "path": str(self.path),
            "architecture": self.class_name,
            "model_type": self.config.get("model_type"),
            "weights": [p.name for p in self.weight_files()],
            "weights_sha256": self.weights_sha256(),
            "demo_model": json.loads(demo.read_text()) if demo.is_file() else None,
        }


def open_checkpoint(model_dir: Path, kind: str) -> Checkpoint:
    """Validate folder, config, architecture, weights and tokenizer; one-line errors otherwise."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise GenExportError(f"model folder {model_dir} does not exist", "pass the path of a local checkpoint folder")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise GenExportError(
            f"{model_dir} has no config.json",
            "pass a folder written by save_pretrained (config.json, weights, tokenizer files)",
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise GenExportError(f"{config_path} is not valid JSON ({error.msg})", "repair config.json") from None
    names = config.get("architectures") or []
    if not names:
        raise GenExportError(
            f"{config_path} names no architectures",
            f"add \"architectures\": [\"...\"] with one of: {', '.join(supported(kind))}",
        )
    architecture = get_architecture(names[0], kind)
    checkpoint = Checkpoint(path=model_dir, class_name=names[0], architecture=architecture, config=config)
    if not checkpoint.weight_files():
        raise GenExportError(
            f"{model_dir} has no weights (model.safetensors or pytorch_model.bin)",
            "save the model with save_pretrained into this folder",
        )
    missing = architecture.missing_tokenizer_files(model_dir)
    if missing is not None:
        raise GenExportError(
            f"{model_dir} lacks tokenizer files ({', '.join(missing)})",
            "save the tokenizer into the model folder with tokenizer.save_pretrained(MODEL_DIR)",
        )
    return checkpoint
