"""Open a local model folder and check it before any export work starts."""

from __future__ import annotations

import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_export.artifacts import TOKENIZER_FILES, check_inside, sha256_files
from gen_export.errors import GenExportError
from gen_export.export.architectures import get_architecture, supported
from gen_export.export.architectures.base import Architecture
from gen_export.validate import one_line

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True)
class Checkpoint:
    """A validated local checkpoint: its folder, architecture and raw config."""

    path: Path
    class_name: str
    architecture: Architecture
    config: dict[str, Any]

    def weight_files(self) -> list[Path]:
        return sorted(p for pattern in WEIGHT_PATTERNS for p in self.path.glob(pattern) if p.is_file())

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


#: Sane bounds for a checkpoint's sizes, checked on config.json before anything is allocated. Far above any
#: model genexport serves on CPU (BioGPT-Large: 48 layers, 25 heads, hidden 1600, vocabulary 57717), far below
#: what would take minutes and terabytes to fail (100,000 layers, a 1e9 vocabulary, hidden 2^20).
SIZE_BOUNDS: dict[str, int] = {"layers": 512, "heads": 1024, "hidden": 65536, "vocab": 4_000_000,
                               "positions": 1 << 20, "intermediate": 1 << 18}
#: Peak memory of an export, as a multiple of the fp32 weights (model, traced graph, onnxruntime sessions of
#: the decoder and the fused graph): measured 4.2-4.5x (README: 2.2 GB of weights -> 10 GB, 2.23 GB -> 9.2 GB).
MEMORY_FACTOR = 5.0
MEMORY_OVERHEAD_BYTES = 512 << 20
GIB = float(1 << 30)


def config_sizes(config: dict[str, Any], architecture: Architecture) -> dict[str, int]:
    """Layers, heads, hidden, vocab (and positions, intermediate where set), each checked against its bounds."""
    sizes: dict[str, int] = {}
    for role, names in architecture.size_attributes().items():
        present = [n for n in names if config.get(n) is not None]
        if not present:
            if role in ("positions", "intermediate"):
                continue
            raise GenExportError(f"config.json has none of {', '.join(names)}", "fix the checkpoint's config.json")
        value = config[present[0]]
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenExportError(f"config.json {present[0]} is {value!r}, not an integer",
                                 "fix the checkpoint's config.json")
        if not 1 <= value <= SIZE_BOUNDS[role]:
            raise GenExportError(f"config.json {present[0]} is {value}, outside 1..{SIZE_BOUNDS[role]}",
                                 "fix the checkpoint's config.json (it must describe the saved weights)")
        sizes[role] = value
    if sizes["hidden"] % sizes["heads"]:
        raise GenExportError(f"config.json hidden size {sizes['hidden']} is not divisible by {sizes['heads']} heads",
                             "fix the checkpoint's config.json")
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < sizes["vocab"]):
            raise GenExportError(f"config.json {key} is {value!r}, not a token id below the vocabulary size "
                                 f"{sizes['vocab']}", "fix the checkpoint's config.json")
    return sizes


def estimated_parameters(sizes: dict[str, int]) -> int:
    hidden = sizes["hidden"]
    intermediate = sizes.get("intermediate", 4 * hidden)
    per_layer = 4 * hidden * hidden + 2 * hidden * intermediate + 10 * hidden
    return sizes["vocab"] * hidden + sizes.get("positions", 1024) * hidden + sizes["layers"] * per_layer


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(sizes: dict[str, int], model_dir: Path) -> None:
    """Refuse early, with the figures, an export this machine's available memory cannot hold.

    GENEXPORT_MEMORY_CHECK=off skips it (the estimate is deliberately rough).
    """
    if os.environ.get("GENEXPORT_MEMORY_CHECK", "").lower() in ("off", "0", "no"):
        return
    parameters = estimated_parameters(sizes)
    needed = parameters * 4 * MEMORY_FACTOR + MEMORY_OVERHEAD_BYTES
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise GenExportError(
            f"exporting {model_dir} needs about {needed / GIB:.1f} GB of memory (~{parameters / 1e6:,.0f}M "
            f"parameters), this machine has {available / GIB:.1f} GB available",
            "use a machine with more memory, or set GENEXPORT_MEMORY_CHECK=off to try anyway",
        )


def check_safetensors(path: Path) -> None:
    """Header and offsets of a safetensors file, read without loading it: a truncated, empty or foreign file is a
    one-line error here instead of a deserialisation traceback."""
    problem = None
    size = path.stat().st_size
    if size == 0:
        problem = "is empty"
    elif size < 8:
        problem = "is too short to be a safetensors file"
    else:
        with path.open("rb") as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            if length > min(size - 8, 100 << 20):
                problem = "has no valid safetensors header (garbage or truncated)"
            else:
                try:
                    header = json.loads(handle.read(length))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    header = None
                if not isinstance(header, dict):
                    problem = "has an unreadable safetensors header"
                else:
                    data = size - 8 - length
                    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items()
                            if k != "__metadata__" and isinstance(t, dict)]
                    if any(not isinstance(e, int) for e in ends) or max(ends, default=0) > data:
                        problem = f"is truncated (its header describes more data than the {data} bytes present)"
    if problem:
        raise GenExportError(f"weights file {path} {problem}", "re-save the model with save_pretrained")


def _json_object(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenExportError(f"{path} is not valid JSON ({error.__class__.__name__})",
                             f"repair or re-save {path.name} (tokenizer.save_pretrained)") from None


def check_tokenizer_files(model_dir: Path) -> None:
    """Tokenizer files that would load into a broken tokenizer: empty merges, empty or malformed vocabularies."""
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json",
                 "vocab.json", "tokenizer.json"):
        path = model_dir / name
        if path.is_file() and not isinstance(_json_object(path), dict):
            raise GenExportError(f"{path} is not a JSON object", f"repair or re-save {name}")
    vocab = model_dir / "vocab.json"
    if vocab.is_file():
        entries = _json_object(vocab)
        if not entries or not all(isinstance(v, int) and not isinstance(v, bool) for v in entries.values()):
            raise GenExportError(f"{vocab} is empty or maps tokens to non-integers", "re-save the tokenizer")
    merges = model_dir / "merges.txt"
    if merges.is_file():
        lines = [line for line in merges.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip() and not line.startswith("#version")]
        if not lines:
            raise GenExportError(f"{merges} holds no merges: the tokenizer would split every word into characters",
                                 "re-save the tokenizer (tokenizer.save_pretrained) with its merges")
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        model = _json_object(tokenizer_json).get("model") or {}
        if not isinstance(model, dict) or not model.get("vocab"):
            raise GenExportError(f"{tokenizer_json} has no vocabulary", "re-save the tokenizer")
        if model.get("type") == "BPE" and not model.get("merges"):
            raise GenExportError(f"{tokenizer_json} holds no BPE merges", "re-save the tokenizer with its merges")
    vocab_txt = model_dir / "vocab.txt"
    if vocab_txt.is_file() and not vocab_txt.read_text(encoding="utf-8", errors="replace").strip():
        raise GenExportError(f"{vocab_txt} is empty", "re-save the tokenizer")


def _plain(text: str) -> str:
    """Text as tokenizers may legitimately normalise it: no accents, no case, no whitespace."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c) and not c.isspace()).lower()


def check_tokenizer(tokenizer: Any, prompts: tuple[str, ...] | list[str], vocab_size: int, model_dir: Path) -> None:
    """Encode and decode every prompt: each must give tokens, none unknown, all inside the model's vocabulary,
    and decode back to the prompt (up to case, accents and spacing)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    for prompt in prompts:
        try:
            ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            decoded = tokenizer.decode(ids, skip_special_tokens=True)
        except Exception as error:  # third-party tokenizer code on user files: any failure is the tokenizer's
            raise GenExportError(f"the tokenizer in {model_dir} fails on '{prompt[:60]}' ({one_line(error)})",
                                 "re-save the tokenizer with tokenizer.save_pretrained") from None
        problem = None
        if not ids:
            problem = "encodes it to no tokens"
        elif unknown is not None and unknown in ids:
            problem = "cannot encode it (unknown tokens)"
        elif max(ids) >= vocab_size or min(ids) < 0:
            problem = f"gives token id {max(ids)}, outside the model's vocabulary of {vocab_size}"
        elif _plain(decoded) != _plain(prompt):
            problem = f"does not decode it back (got '{decoded[:60]}')"
        if problem:
            raise GenExportError(f"the tokenizer in {model_dir} {problem}: '{prompt[:60]}'",
                                 "check the tokenizer files (vocab, merges) belong to this model, or change the "
                                 "prompts")


def open_checkpoint(model_dir: Path, kind: str) -> Checkpoint:
    """Validate folder, config (sizes and memory), architecture, weights and tokenizer files; one-line errors.

    Nothing here allocates more than a file header: a config describing a huge model is refused before loading.
    """
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
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise GenExportError(f"{config_path} is not valid JSON ({error.msg})", "repair config.json") from None
    except UnicodeDecodeError:
        raise GenExportError(f"{config_path} is not UTF-8 text", "repair config.json") from None
    if not isinstance(config, dict):
        raise GenExportError(f"{config_path} holds a JSON {type(config).__name__}, not an object",
                             "repair config.json (save_pretrained writes an object)")
    names = config.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise GenExportError(f"{config_path} \"architectures\" is not a list of class names",
                             f"write \"architectures\": [\"...\"] with one of: {', '.join(supported(kind))}")
    if not names:
        raise GenExportError(
            f"{config_path} names no architectures",
            f"add \"architectures\": [\"...\"] with one of: {', '.join(supported(kind))}",
        )
    architecture = get_architecture(names[0], kind)
    sizes = config_sizes(config, architecture)
    checkpoint = Checkpoint(path=model_dir, class_name=names[0], architecture=architecture, config=config)
    if not checkpoint.weight_files():
        raise GenExportError(
            f"{model_dir} has no weights (model.safetensors or pytorch_model.bin)",
            "save the model with save_pretrained into this folder",
        )
    for weights in checkpoint.weight_files():
        if weights.suffix == ".safetensors":
            check_safetensors(weights)
        elif weights.stat().st_size == 0:
            raise GenExportError(f"weights file {weights} is empty", "re-save the model with save_pretrained")
    missing = architecture.missing_tokenizer_files(model_dir)
    if missing is not None:
        raise GenExportError(
            f"{model_dir} lacks tokenizer files ({', '.join(missing)})",
            "save the tokenizer into the model folder with tokenizer.save_pretrained(MODEL_DIR)",
        )
    check_inside(model_dir, (*TOKENIZER_FILES, "generation_config.json"))
    check_tokenizer_files(model_dir)
    check_memory(sizes, model_dir)
    return checkpoint
