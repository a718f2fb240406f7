"""`genexport run`: use an export folder as a user would, with nothing but onnxruntime and its tokenizer.

The export's `genexport.json` says what the folder holds (which graph, the generation defaults it was
built with, pad and EOS ids, the embedding tokenizer's settings), so a caller only gives text:

    from gen_export.run import run_export

    result = run_export("out/demo", ["the patient was treated with"])
    for generated in result.prompts:
        print(generated.prompt, "->", generated.texts[0], f"({generated.tokens_per_second:.0f} tokens/s)")

Per-call settings override the recorded defaults; lengths are counted in new tokens (transformers'
`max_new_tokens`) and translated to the graph's absolute `max_length`/`min_length` inputs per prompt.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gen_export.contract import CallSettings
from gen_export.errors import GenExportError
from gen_export.manifest import EmbeddingSettings, GenerationSettings, RecordedDefaults, read_manifest
from gen_export.options import GRAPH_FILES, SearchMode

TOKENIZER_DIR = "tokenizer"
#: `genexport embed`'s fp32 graph (gen_export.embed.EMBEDDING_FILE, not imported: it pulls in torch).
EMBEDDING_GRAPH = "embedding.onnx"


@dataclass(frozen=True)
class RunSettings:
    """Per-call generation settings; None keeps the export's recorded default."""

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    num_return_sequences: int | None = None
    length_penalty: float | None = None
    repetition_penalty: float | None = None
    #: Sampling graphs only: the operator's random seed (fixed, so a run can be repeated).
    seed: int = 0


@dataclass
class GeneratedText:
    """One prompt's result: every returned sequence, decoded after the prompt and cut at EOS/pad."""

    prompt: str
    texts: list[str]
    tokens: list[list[int]]
    prompt_tokens: int
    #: The graph's absolute inputs for this prompt (prompt tokens included).
    max_length: int
    min_length: int
    seconds: float

    @property
    def new_tokens(self) -> int:
        """New tokens of the first (best) returned sequence; the others share its steps."""
        return len(self.tokens[0]) if self.tokens else 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"new_tokens": self.new_tokens, "tokens_per_second": self.tokens_per_second}


@dataclass
class GenerationRun:
    export_dir: Path
    graph: str
    mode: SearchMode
    num_beams: int
    num_return_sequences: int
    length_penalty: float
    repetition_penalty: float
    #: Where the new-token budget came from: the call, the export's max_new_tokens, or its absolute max_length.
    budget: str
    load_seconds: float
    prompts: list[GeneratedText] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "generation", "export_dir": str(self.export_dir), "graph": self.graph, "mode": self.mode.value,
                "num_beams": self.num_beams, "num_return_sequences": self.num_return_sequences,
                "length_penalty": self.length_penalty, "repetition_penalty": self.repetition_penalty,
                "budget": self.budget, "load_seconds": self.load_seconds,
                "prompts": [p.as_dict() for p in self.prompts]}


@dataclass
class EmbeddingRun:
    export_dir: Path
    graph: str
    texts: list[str]
    #: [texts, dim], or [texts, tokens, dim] for per-token pooling.
    vectors: np.ndarray
    #: L2 norm per text (per-token pooling: the mean over the text's real tokens).
    norms: list[float]
    load_seconds: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "embedding", "export_dir": str(self.export_dir), "graph": self.graph, "texts": self.texts,
                "shape": list(self.vectors.shape), "norms": self.norms, "load_seconds": self.load_seconds,
                "seconds": self.seconds, "vectors": self.vectors.tolist()}


def run_export(export_dir: Path | str, prompts: list[str] | tuple[str, ...], *,
               settings: RunSettings | None = None, graph: str | None = None,
               threads: int | None = None) -> GenerationRun | EmbeddingRun:
    """Run the graph of a genexport output folder on `prompts` (texts, for an embedding export)."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise GenExportError("no prompts given", 'pass one or more prompts, e.g. genexport run OUT "the patient was"')
    command = manifest.command
    if command != "embed" and command not in {mode.value for mode in SearchMode}:
        raise GenExportError(f"{export_dir} holds a '{command}' export, which has no generation graph",
                             "run a folder written by genexport beam or genexport embed")
    # The main graph, not a variant (the manifest lists embedding.int8.onnx before embedding.onnx).
    graph_name = graph or (EMBEDDING_GRAPH if command == "embed" else GRAPH_FILES[SearchMode(command)])
    if not (export_dir / graph_name).is_file():
        found = sorted(p.name for p in export_dir.glob("*.onnx"))
        raise GenExportError(f"{export_dir} has no graph {graph_name}", f"use --graph with one of {found}")
    if command == "embed":
        if settings not in (None, RunSettings()):
            raise GenExportError("generation settings given for an embedding export",
                                 "drop --max-new-tokens/--num-beams/... for an embed output folder")
        return _run_embedding(export_dir, manifest.embedding(), graph_name, prompts, threads)
    return _run_generation(export_dir, SearchMode(command), manifest.generation(), graph_name, prompts,
                           settings or RunSettings(), threads)


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _lengths(prompt_tokens: int, settings: RunSettings, defaults: RecordedDefaults, max_positions: int,
             ) -> tuple[int, int, str]:
    """Absolute (max_length, min_length) for one prompt, and where the budget came from."""
    max_new = settings.max_new_tokens if settings.max_new_tokens is not None else defaults.max_new_tokens
    if max_new is not None:
        if max_new < 1:
            raise GenExportError(f"max_new_tokens {max_new} must be at least 1", "use e.g. --max-new-tokens 24")
        max_length = prompt_tokens + max_new
        budget = f"{max_new} new tokens" + ("" if settings.max_new_tokens is not None else " (export default)")
        if max_length > max_positions:
            raise GenExportError(
                f"the prompt ({prompt_tokens} tokens) plus {max_new} new tokens is above the model's "
                f"max_position_embeddings {max_positions}",
                f"use --max-new-tokens of at most {max_positions - prompt_tokens} or a shorter prompt")
    else:
        max_length = defaults.max_length
        budget = f"max_length {max_length} (export default, prompt included)"
        if max_length <= prompt_tokens:
            raise GenExportError(
                f"the prompt has {prompt_tokens} tokens, not fewer than the export's max_length {max_length}",
                f"use --max-new-tokens (at most {max_positions - prompt_tokens}) or a shorter prompt")
    min_new = settings.min_new_tokens if settings.min_new_tokens is not None else defaults.min_new_tokens
    min_length = prompt_tokens + min_new if min_new is not None else defaults.min_length
    if min_length >= max_length:
        raise GenExportError(f"min_length {min_length} is not below max_length {max_length}",
                             "lower --min-new-tokens or raise --max-new-tokens")
    return max_length, min_length, budget


def _run_generation(export_dir: Path, mode: SearchMode, recorded: GenerationSettings, graph_name: str,
                    prompts: list[str], settings: RunSettings, threads: int | None) -> GenerationRun:
    from gen_export.runtime import make_session
    from gen_export.verify.parity import user_tokens

    defaults = recorded.generation_defaults
    search = recorded.search
    max_positions = recorded.max_positions
    if mode is not SearchMode.BEAM and ((settings.num_beams or 1) != 1 or (settings.num_return_sequences or 1) != 1):
        raise GenExportError(f"{graph_name} is a {mode.value} graph: one sequence per prompt, no beams",
                             f"drop --num-beams/--num-return-sequences, or export with genexport beam "
                             f"--search beam (this folder's graph is {GRAPH_FILES[mode]})")
    num_beams = settings.num_beams or defaults.num_beams
    # A larger num_beams than the default still returns the default count of sequences unless asked.
    num_return = settings.num_return_sequences or min(defaults.num_return_sequences, num_beams)
    length_penalty = settings.length_penalty if settings.length_penalty is not None else defaults.length_penalty
    repetition_penalty = (settings.repetition_penalty if settings.repetition_penalty is not None
                          else defaults.repetition_penalty)
    stop = {search.eos_token_id, search.pad_token_id}

    tokenizer = _tokenizer(export_dir / TOKENIZER_DIR)
    start = time.perf_counter()
    session = make_session(export_dir / graph_name, threads=threads)
    run = GenerationRun(export_dir.resolve(), graph_name, mode, num_beams, num_return, float(length_penalty),
                        float(repetition_penalty), "", time.perf_counter() - start)
    input_names = [i.name for i in session.get_inputs()]
    for prompt in prompts:
        ids = np.asarray([tokenizer(prompt)["input_ids"]], dtype=np.int64)
        prompt_tokens = ids.shape[1]
        max_length, min_length, run.budget = _lengths(prompt_tokens, settings, defaults, max_positions)
        call = CallSettings(max_length=max_length, min_length=min_length, num_beams=num_beams,
                            num_return_sequences=num_return, length_penalty=float(length_penalty),
                            repetition_penalty=float(repetition_penalty),
                            seed=settings.seed if "seed" in input_names else None)
        call.check(prompt_tokens, max_positions)
        feed = call.feed(ids, np.ones_like(ids), input_names)
        start = time.perf_counter()
        sequences = session.run(["sequences"], feed)[0]
        seconds = time.perf_counter() - start
        if sequences.ndim == 2:  # greedy / sampling graphs return [batch, max_length]
            sequences = sequences[:, None, :]
        tokens = user_tokens(sequences, prompt_tokens, stop)[0]
        texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        run.prompts.append(GeneratedText(prompt, texts, tokens, prompt_tokens, max_length, min_length, seconds))
    return run


def _run_embedding(export_dir: Path, recorded: EmbeddingSettings, graph_name: str, texts: list[str],
                   threads: int | None) -> EmbeddingRun:
    from gen_export.runtime import make_session

    tokenizer = _tokenizer(export_dir)
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, padding=True, truncation=True, max_length=recorded.tokenizer.max_length,
                      return_tensors="np")
    start = time.perf_counter()
    session = make_session(export_dir / graph_name, threads=threads)
    load_seconds = time.perf_counter() - start
    names = {i.name for i in session.get_inputs()}
    dtypes = {spec.name: spec.dtype for spec in recorded.inputs}
    feed = {name: np.asarray(value, dtype=dtypes.get(name, "int64")) for name, value in batch.items() if name in names}
    start = time.perf_counter()
    vectors = session.run([recorded.output.name], feed)[0]
    seconds = time.perf_counter() - start
    norms = np.linalg.norm(vectors, axis=-1)
    if norms.ndim == 2:  # per-token pooling: average over each text's real tokens
        mask = batch["attention_mask"].astype(bool)
        norms = np.array([row[keep].mean() for row, keep in zip(norms, mask, strict=True)])
    return EmbeddingRun(export_dir.resolve(), graph_name, texts, vectors, [float(n) for n in norms], load_seconds,
                        seconds)
