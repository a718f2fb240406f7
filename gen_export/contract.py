"""The generation contract, declared once: what a generation graph takes per call, and what is baked into it.

Two kinds of setting meet at a generation graph, and the names say which is which:

* **fed per call** (`CallSettings`, the graph inputs of `GRAPH_INPUTS`): lengths, beams, returned sequences,
  penalties, the seed. A caller (the parity harness, `genexport run`, the Triton tokenizer model) feeds them on
  every call; an export records its defaults (`manifest.RecordedDefaults`).
* **baked into the graph** when it is built (`search_graph.SearchGraphSpec` for onnxruntime's operator,
  `hf_search.HfSearchSpec` for transformers' rules; the manifest's `settings.search`): EOS/pad ids, vocabulary
  size, `no_repeat_ngram_size`, sampling's temperature/top-p for onnxruntime's operator.

The inputs each family and search mode declare are listed here (`fed_inputs`, `transformers_graph_inputs`),
read by the graph builders, the parity feeds (`parity.graph_feed`), the manifest, `genexport run` and the
Triton writer's request parameters. This module imports numpy only (no torch, onnx or onnxruntime).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gen_export.errors import GenExportError
from gen_export.options import SearchMode
from gen_export.validate import require_float, require_int

if TYPE_CHECKING:
    from gen_export.verify.reference_search import SearchFlags


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and dims (int = static, str = dynamic axis)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


def _scalar(name: str, dtype: str) -> TensorSpec:
    """A per-call setting: a [1]-shaped input (what onnxruntime's search operators take)."""
    return TensorSpec(name, dtype, (1,))


#: Every input a generation graph of either family can have, with its element type and dims.
GRAPH_INPUTS: dict[str, TensorSpec] = {spec.name: spec for spec in [
    TensorSpec("input_ids", "int32", ("batch_size", "sequence_length")),
    TensorSpec("attention_mask", "int32", ("batch_size", "sequence_length")),
    _scalar("max_length", "int32"),
    _scalar("min_length", "int32"),
    _scalar("num_beams", "int32"),
    _scalar("num_return_sequences", "int32"),
    _scalar("length_penalty", "float32"),
    _scalar("repetition_penalty", "float32"),
    # transformers rules only: generate's own inputs, each with a default initializer (see DEFAULTED_INPUTS).
    _scalar("max_new_tokens", "int32"),
    _scalar("min_new_tokens", "int32"),
    _scalar("seed", "int32"),
    _scalar("temperature", "float32"),
    _scalar("top_k", "int32"),
    _scalar("top_p", "float32"),
]}

#: onnxruntime's operators (BeamSearch, GreedySearch, Sampling): the inputs per mode, in the operator's order.
ORT_INPUTS: dict[SearchMode, tuple[str, ...]] = {
    SearchMode.BEAM: ("input_ids", "max_length", "min_length", "num_beams", "num_return_sequences",
                      "length_penalty", "repetition_penalty", "attention_mask"),
    SearchMode.GREEDY: ("input_ids", "max_length", "min_length", "repetition_penalty", "attention_mask"),
    SearchMode.SAMPLING: ("input_ids", "max_length", "min_length", "repetition_penalty", "attention_mask", "seed"),
}

#: transformers-rules graphs (gen_export.search.hf_search): the inputs of the beam and the one-sequence loops, and the
#: sampling inputs either adds.
TRANSFORMERS_BEAM_INPUTS = ("input_ids", "max_length", "min_length", "num_beams", "num_return_sequences",
                            "length_penalty", "repetition_penalty", "attention_mask", "max_new_tokens",
                            "min_new_tokens")
TRANSFORMERS_GREEDY_INPUTS = ("input_ids", "max_length", "min_length", "repetition_penalty", "attention_mask",
                              "max_new_tokens", "min_new_tokens")
TRANSFORMERS_SAMPLING_INPUTS = ("seed", "temperature", "top_k", "top_p")
#: Inputs with a default initializer of the same name (a caller may leave them out).
DEFAULTED_INPUTS = ("max_new_tokens", "min_new_tokens", *TRANSFORMERS_SAMPLING_INPUTS)

#: The generation graph's outputs (transformers rules declare them so; onnxruntime's operators name their
#: dims themselves). Greedy and sampling return one sequence per prompt: `sequences` is [batch, length].
BEAM_OUTPUTS = (TensorSpec("sequences", "int32", ("batch_size", "num_return_sequences", "length")),
                TensorSpec("sequences_scores", "float32", ("batch_size", "num_return_sequences")))
ONE_SEQUENCE_OUTPUTS = (TensorSpec("sequences", "int32", ("batch_size", "length")),)


def ort_inputs(mode: SearchMode) -> list[str]:
    """onnxruntime rules: what the graph takes (and a caller feeds), in the operator's order."""
    return list(ORT_INPUTS[SearchMode(mode)])


def transformers_graph_inputs(beams: bool, sampling: bool) -> list[str]:
    """transformers rules: every input of the graph (defaulted ones included), in the graph's order."""
    names = list(TRANSFORMERS_BEAM_INPUTS if beams else TRANSFORMERS_GREEDY_INPUTS)
    return names + list(TRANSFORMERS_SAMPLING_INPUTS) if sampling else names


def transformers_fed_inputs(beams: bool, sampling: bool) -> list[str]:
    """transformers rules: what a client (and the Triton tokenizer model) feeds: the onnxruntime graphs' inputs,
    and `seed` for sampling. The other defaulted inputs keep their defaults unless a caller names them."""
    return [n for n in transformers_graph_inputs(beams, sampling) if n == "seed" or n not in DEFAULTED_INPUTS]


def input_specs(names: list[str]) -> list[TensorSpec]:
    return [GRAPH_INPUTS[name] for name in names]


#: The Triton generator's optional request parameters -> the graph input each one becomes (the tokenizer model
#: turns the new-token counts into absolute lengths). A parameter exists only where the graph has that input.
REQUEST_PARAMETERS: dict[str, str] = {
    "MAX_NEW_TOKENS": "max_length",
    "MIN_NEW_TOKENS": "min_length",
    "NUM_BEAMS": "num_beams",
    "NUM_RETURN_SEQUENCES": "num_return_sequences",
    "LENGTH_PENALTY": "length_penalty",
    "REPETITION_PENALTY": "repetition_penalty",
    "SEED": "seed",
}


@dataclass(frozen=True)
class CallSettings:
    """What a caller feeds a generation graph on one call (absolute lengths, prompt included).

    `reference_search.SearchFlags` (the test oracle's flags) adds what is baked into the graph
    (`no_repeat_ngram_size`) and what `generate` takes besides (`early_stopping`); `from_flags` takes the fed part.
    """

    max_length: int
    min_length: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    #: Sampling graphs only; None feeds no seed (a graph that needs one then lacks an input).
    seed: int | None = None

    @classmethod
    def from_flags(cls, flags: Any, seed: int | None = None) -> CallSettings:
        return cls(max_length=flags.max_length, min_length=flags.min_length, num_beams=flags.num_beams,
                   num_return_sequences=flags.num_return_sequences, length_penalty=flags.length_penalty,
                   repetition_penalty=flags.repetition_penalty, seed=seed)

    def check(self, prompt_len: int, max_positions: int) -> None:
        """The search operators' runtime limits, as one-line errors before anything runs."""
        if self.num_return_sequences > self.num_beams:
            raise GenExportError(
                f"num_return_sequences {self.num_return_sequences} is larger than num_beams {self.num_beams}",
                "ask for at most num_beams sequences or raise num_beams",
            )
        if self.max_length <= prompt_len:
            raise GenExportError(
                f"max_length {self.max_length} is not above the prompt length {prompt_len} (padded, in tokens)",
                f"use --max-length of at least {prompt_len + 1} or a shorter prompt",
            )
        if self.max_length > max_positions:
            raise GenExportError(
                f"max_length {self.max_length} is above the model's max_position_embeddings {max_positions}",
                f"use --max-length of at most {max_positions}",
            )
        if self.min_length >= self.max_length:
            raise GenExportError(
                f"min_length {self.min_length} is not below max_length {self.max_length}",
                "lower --min-length or raise --max-length",
            )
        if not 1 <= self.num_beams <= 128:
            raise GenExportError(f"num_beams {self.num_beams} is outside 1..128", "use 1 <= --num-beams <= 128")
        if self.repetition_penalty <= 0:
            raise GenExportError("repetition_penalty must be > 0", "use --repetition-penalty 1.0 for none")

    def feed(self, ids: np.ndarray, mask: np.ndarray, input_names: list[str]) -> dict[str, np.ndarray]:
        """The graph's inputs for these settings, typed as `GRAPH_INPUTS` declares; only `input_names` are fed."""
        values: dict[str, Any] = {
            "input_ids": ids, "attention_mask": mask, "max_length": self.max_length, "min_length": self.min_length,
            "num_beams": self.num_beams, "num_return_sequences": self.num_return_sequences,
            "length_penalty": self.length_penalty, "repetition_penalty": self.repetition_penalty,
        }
        if self.seed is not None:
            values["seed"] = self.seed
        feed = {}
        for name in input_names:
            spec = GRAPH_INPUTS[name]
            value = values[name]
            feed[name] = np.asarray(value).astype(spec.dtype) if spec.dims != (1,) else np.array([value], spec.dtype)
        return feed


@dataclass(frozen=True)
class GenerationDefaults:
    """Defaults for what is fed per call (recorded in the manifest as `RecordedDefaults`, used by Triton configs).

    Lengths come either absolute (`max_length`/`min_length`: the graph's inputs, padded prompt included) or
    as new tokens (`max_new_tokens`/`min_new_tokens`, as transformers counts them), translated to absolute
    ones for the longest parity prompt by `resolve_lengths`; the manifest records both. `genexport run`
    counts a recorded new-token budget from each prompt's own length.
    """

    #: None: min(64, the model's max_position_embeddings), unless max_new_tokens is given.
    max_length: int | None = None
    min_length: int = 0
    num_beams: int = 4
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None

    def check_length_forms(self) -> None:
        """One form per bound: a request with both is refused (a resolved one records both, see above)."""
        if self.max_new_tokens is not None and self.max_length is not None:
            raise GenExportError("both --max-length and --max-new-tokens given",
                                 "give one: --max-new-tokens N counts generated tokens, --max-length the prompt too")
        if self.min_new_tokens is not None and self.min_length:
            raise GenExportError("both --min-length and --min-new-tokens given",
                                 "give one: --min-new-tokens N counts generated tokens, --min-length the prompt too")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise GenExportError(f"max_new_tokens {self.max_new_tokens} must be at least 1",
                                 "use e.g. --max-new-tokens 24")
        if self.min_new_tokens is not None and self.min_new_tokens < 0:
            raise GenExportError(f"min_new_tokens {self.min_new_tokens} must be at least 0",
                                 "use e.g. --min-new-tokens 0")

    def validate(self) -> None:
        """Types, finiteness and ranges of every default (what the search operators and a Triton repository made
        from the export can serve: a default of 0 returned sequences rejects every request)."""
        if self.max_length is not None:
            require_int("max_length", self.max_length, 2, None, "--max-length")
        require_int("min_length", self.min_length, 0, None, "--min-length")
        require_int("num_beams", self.num_beams, 1, 128, "--num-beams")
        require_int("num_return_sequences", self.num_return_sequences, 1, 128, "--num-return-sequences")
        require_float("length_penalty", self.length_penalty, -100.0, 100.0, flag="--length-penalty")
        require_float("repetition_penalty", self.repetition_penalty, 0.0, 100.0, low_open=True,
                      flag="--repetition-penalty")

    def call_settings(self) -> CallSettings:
        """What these defaults feed the graph (lengths resolved first: `generation.resolve_lengths`)."""
        if self.max_length is None:
            raise ValueError("resolve max_length first (resolve_lengths)")
        return CallSettings(max_length=self.max_length, min_length=self.min_length, num_beams=self.num_beams,
                            num_return_sequences=self.num_return_sequences, length_penalty=self.length_penalty,
                            repetition_penalty=self.repetition_penalty)

    def flags(self, no_repeat_ngram_size: int = 0) -> SearchFlags:
        """The reference search's flags: these defaults plus the baked-in `no_repeat_ngram_size`."""
        from gen_export.verify.reference_search import SearchFlags  # the test oracle (torch): only where it runs

        if self.max_length is None:
            raise ValueError("resolve max_length first (resolve_lengths)")
        return SearchFlags(
            max_length=self.max_length, min_length=self.min_length, num_beams=self.num_beams,
            num_return_sequences=self.num_return_sequences, length_penalty=self.length_penalty,
            repetition_penalty=self.repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
            early_stopping=False,
        )
