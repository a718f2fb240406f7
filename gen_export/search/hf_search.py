"""Generation graphs that follow transformers' own rules (`genexport beam --rules transformers`).

The search logic of `GenerationMixin._beam_search` / `_sample` (transformers 4.57 and 5.x share it: the
vectorized beam search of transformers PR #35802) is written with standard ONNX operators only (the default
`ai.onnx` domain: Loop, TopK, Gather, GatherElements, ScatterElements, ...) around the same with-past decoder
`genexport decoder` exports. The decoder's nodes are placed in the Loop body once; its initializers stay in
the outer graph and are read from the body as outer-scope values, so the weights exist once.

Rules reproduced (names as in transformers' generation/utils.py):

* Beam search keeps `beams_to_keep = max(2, 1 + n_eos) * num_beams` candidates per step from
  log_softmax(logits) + processors + running beam score; only beam 0 is live at the first step (-1e9).
* A candidate "hits the stopping criteria" when its token is one of the EOS ids or its length reaches
  max_length; among the top num_beams candidates, those become finished hypotheses scored
  `sum_logprobs / (cur_len + 1 - prompt_len) ** length_penalty` (generated length, EOS counted), merged with the
  kept ones by top-k over scores (with the same -1e9 masks for full batches and the early-stop heuristic).
* Early stop heuristic for early_stopping False / True / "never" exactly as `_check_early_stop_heuristic`.
* Processors in transformers' order: repetition penalty (over every token of the sequence, padded prompt
  included), no-repeat-ngram, min_length / min_new_tokens (EOS ids -> -inf).
* Output: the best num_return_sequences finished hypotheses, EOS kept, padded with `pad or eos[0]`, cut to
  prompt + the longest returned generated length; `sequences_scores` = their beam scores.
* Greedy: processors on raw logits, argmax, pad after EOS, stop when every row finished or max_length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gen_export.contract import (
    BEAM_OUTPUTS,
    ONE_SEQUENCE_OUTPUTS,
    TRANSFORMERS_BEAM_INPUTS,
    TRANSFORMERS_GREEDY_INPUTS,
    TRANSFORMERS_SAMPLING_INPUTS,
    TensorSpec,
    input_specs,
    transformers_fed_inputs,
    transformers_graph_inputs,
)
from gen_export.contract import DEFAULTED_INPUTS as CONTRACT_DEFAULTED_INPUTS
from gen_export.errors import GenExportError
from gen_export.runtime import needs_external_data

#: transformers' "impossible" score (beam scores of empty slots, masked candidates).
NEG = -1.0e9


class EarlyStopping(StrEnum):
    FALSE = "false"
    TRUE = "true"
    NEVER = "never"

    @classmethod
    def parse(cls, value: bool | str | None) -> EarlyStopping:
        if value is None or value is False:
            return cls.FALSE
        if value is True:
            return cls.TRUE
        try:
            return cls(str(value).lower())
        except ValueError:
            raise GenExportError(f"early_stopping '{value}' is not one of true, false, never",
                                 "use --early-stopping true, false or never") from None

    def as_generate(self) -> bool | str:
        """The value `GenerationConfig(early_stopping=...)` takes."""
        return {EarlyStopping.FALSE: False, EarlyStopping.TRUE: True, EarlyStopping.NEVER: "never"}[self]


def transformers_major() -> int:
    from importlib.metadata import version

    return int(version("transformers").split(".")[0])


class HfMode(StrEnum):
    BEAM = "beam"
    GREEDY = "greedy"
    #: generate(do_sample=True, num_beams=1): `_sample` with multinomial draws.
    SAMPLE = "sampling"
    #: generate(do_sample=True, num_beams>1): `_beam_search` drawing candidates without replacement.
    BEAM_SAMPLE = "beam_sampling"

    @property
    def beams(self) -> bool:
        return self in (HfMode.BEAM, HfMode.BEAM_SAMPLE)

    @property
    def sampling(self) -> bool:
        return self in (HfMode.SAMPLE, HfMode.BEAM_SAMPLE)


@dataclass(frozen=True)
class HfSearchSpec:
    """What is fixed when a transformers-rules graph is built (recorded in the manifest)."""

    mode: HfMode
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    vocab_size: int
    early_stopping: EarlyStopping = EarlyStopping.FALSE
    no_repeat_ngram_size: int = 0
    #: Defaults of the per-request inputs transformers has and onnxruntime's operators do not.
    max_new_tokens: int = 0  # 0: unset, max_length applies
    min_new_tokens: int = 0
    #: Sampling graphs only: defaults of the temperature / top_k / top_p inputs (transformers' neutral values
    #: 1.0 / 0 / 1.0 switch a warper off).
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    #: transformers 5 passes `prompt_ignore_length` = each row's left padding to RepetitionPenaltyLogitsProcessor
    #: (pad positions are not penalised); 4.57 penalises every token of input_ids. Follows the installed version.
    repetition_penalty_ignores_padding: bool = field(default_factory=lambda: transformers_major() >= 5)
    rules: str = field(default="transformers", init=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mode": self.mode.value, "early_stopping": self.early_stopping.value,
                               "eos_token_ids": list(self.eos_token_ids), "eos_token_id": self.eos_token_ids[0]}

    @property
    def fill_token_id(self) -> int:
        """`pad_token_id or eos_token_id[0]`: what transformers' beam search pads finished sequences with."""
        return self.pad_token_id if self.pad_token_id else self.eos_token_ids[0]


@dataclass(frozen=True)
class HfOptions:
    """What only the transformers-rules family takes (export-time choices and new input defaults)."""

    early_stopping: EarlyStopping = EarlyStopping.FALSE
    #: None: the model's config eos_token_id.
    eos_token_ids: tuple[int, ...] | None = None
    max_new_tokens: int = 0
    min_new_tokens: int = 0
    #: Sampling defaults (graph inputs); top_k has no onnxruntime counterpart.
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def spec(self, mode: Any, dims: Any, no_repeat_ngram_size: int = 0, num_beams: int = 1) -> HfSearchSpec:
        """The graph spec for a `SearchMode` and the decoder's `DecoderDims`; sampling with num_beams > 1 is
        beam sampling (generate(do_sample=True, num_beams=n))."""
        hf_mode = HfMode(str(mode))
        if hf_mode is HfMode.SAMPLE and num_beams > 1:
            hf_mode = HfMode.BEAM_SAMPLE
        return HfSearchSpec(
            hf_mode, self.eos_token_ids or (dims.eos_token_id,), dims.pad_token_id, dims.vocab_size,
            early_stopping=self.early_stopping, no_repeat_ngram_size=no_repeat_ngram_size,
            max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
        )

    def non_default(self) -> list[str]:
        """Flags set away from what onnxruntime's operators also do."""
        flags = []
        if self.early_stopping is not EarlyStopping.FALSE:
            flags.append(f"--early-stopping {self.early_stopping.value}")
        if self.eos_token_ids is not None and len(self.eos_token_ids) > 1:
            flags.append("several EOS ids")
        if self.max_new_tokens:
            flags.append("--max-new-tokens")
        if self.min_new_tokens:
            flags.append("--min-new-tokens")
        if self.top_k:
            flags.append("--top-k")
        return flags


RULES = ("onnxruntime", "transformers")


def check_rules(rules: str, mode: Any, options: HfOptions | None) -> HfOptions | None:
    """The options of the transformers family, or None for onnxruntime's; one-line errors naming the other family."""
    if rules not in RULES:
        raise GenExportError(f"unknown rules '{rules}'", "use --rules onnxruntime or --rules transformers")
    options = options or HfOptions()
    if rules == "onnxruntime":
        refused = options.non_default()
        if refused:
            raise GenExportError(
                f"{', '.join(refused)} cannot be honoured by onnxruntime's search operators",
                "use --rules transformers (generate's own rules in standard ONNX)")
        return None
    if options.top_k < 0:
        raise GenExportError(f"top_k {options.top_k} is negative", "use --top-k 0 (off) or a positive count")
    if options.top_k and str(mode) != HfMode.SAMPLE.value:
        raise GenExportError(f"top_k only applies to sampling, not to {mode} search",
                             "use --search sampling, or drop --top-k")
    return options


#: Graph inputs in order: today's (onnxruntime operator order) then the new per-request ones with defaults.
#: The graph's inputs are declared in gen_export.contract (one list for every reader).
BEAM_INPUTS = list(TRANSFORMERS_BEAM_INPUTS)
GREEDY_INPUTS = list(TRANSFORMERS_GREEDY_INPUTS)
SAMPLING_INPUTS = list(TRANSFORMERS_SAMPLING_INPUTS)
DEFAULTED_INPUTS = list(CONTRACT_DEFAULTED_INPUTS)


def hf_graph_inputs(mode: HfMode) -> list[str]:
    return transformers_graph_inputs(mode.beams, mode.sampling)


def hf_fed_inputs(mode: HfMode) -> list[str]:
    """The inputs a client (and the Triton tokenizer model) feeds: today's graphs' inputs, `seed` for sampling.
    The other new inputs keep their defaults unless a caller names them."""
    return transformers_fed_inputs(mode.beams, mode.sampling)


class _Graph:
    """A list of nodes with generated value names; `op(...)` returns the output name(s)."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def name(self, hint: str = "t") -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, hint: str | None = None,
           **attrs: Any) -> Any:
        names = [self.name(hint or op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0] + "_node", **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        array = np.asarray(value, dtype=dtype)
        out = self.name("const")
        self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node",
                                           value=numpy_helper.from_array(array, out)))
        return out

    # Shorthands -------------------------------------------------------------------------------------------
    def i64(self, *values: int) -> str:
        return self.const(list(values))

    def scalar(self, value: float | int | bool, dtype: Any) -> str:
        return self.const(value, dtype)

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        """Reduce* with axes as an attribute before opset 18 (ReduceSum: 13), as an input from then on."""
        input_axes = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if input_axes:
            return self.op(op_type, x, self.i64(*axes), keepdims=keepdims)
        return self.op(op_type, x, axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, *axes: int) -> str:
        return self.op("Unsqueeze", x, self.i64(*axes))

    def squeeze(self, x: str, *axes: int) -> str:
        return self.op("Squeeze", x, self.i64(*axes))

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)

    def shape_of(self, x: str, start: int, end: int | None = None) -> str:
        if end is None:
            return self.op("Shape", x, start=start)
        return self.op("Shape", x, start=start, end=end)

    def concat(self, *xs: str, axis: int = 0) -> str:
        return self.op("Concat", *xs, axis=axis)

    def any_(self, x: str, axes: list[int], keepdims: int = 1) -> str:
        """Logical any over axes (ReduceMax has no bool kernel before opset 20)."""
        as_int = self.cast(x, TensorProto.INT32)
        return self.cast(self.reduce("ReduceMax", as_int, axes, keepdims), TensorProto.BOOL)

    def all_(self, x: str, axes: list[int], keepdims: int = 1) -> str:
        as_int = self.cast(x, TensorProto.INT32)
        return self.cast(self.reduce("ReduceMin", as_int, axes, keepdims), TensorProto.BOOL)

    def mask_add(self, x: str, condition: str) -> str:
        """x + condition * -1e9 in float32, the way transformers masks scores (bool -> float, times, add)."""
        return self.op("Add", x, self.op("Mul", self.cast(condition, TensorProto.FLOAT),
                                          self.scalar(NEG, np.float32)))

    def pow_length(self, length_i64: str, exponent_f32: str) -> str:
        """float32(double(length) ** double(exponent)): transformers computes `int ** float` in Python."""
        base = self.cast(length_i64, TensorProto.DOUBLE)
        return self.cast(self.op("Pow", base, self.cast(exponent_f32, TensorProto.DOUBLE)), TensorProto.FLOAT)


# ---------------------------------------------------------------------------------------------------------------
# Logits processors (transformers' order: repetition penalty, no-repeat-ngram, min length / min new tokens)
# ---------------------------------------------------------------------------------------------------------------

def _process(g: _Graph, scores: str, seqs: str, cur_len: str, v: dict[str, str], spec: HfSearchSpec,
             vocab: int) -> str:
    """scores (R, V) float, seqs (R, cur_len) int64 -> processed scores."""
    min_len_eff, repetition_penalty = v["MIN"], v["rep"]
    # RepetitionPenaltyLogitsProcessor: gather, where(score < 0, score * p, score / p), scatter back. Duplicate
    # indices carry the same value, so the scatter order does not matter. p = 1 is an exact identity.
    if spec.repetition_penalty_ignores_padding:
        # transformers 5: positions before the row's first real token point at a spare column V, dropped after.
        positions = g.op("Range", g.scalar(0, np.int64), cur_len, g.scalar(1, np.int64))
        ids = g.op("Where", g.op("Less", positions, v["pad_len"]), g.scalar(vocab, np.int64), seqs)
        spare = g.op("ConstantOfShape", g.concat(g.shape_of(scores, 0, 1), g.i64(1)),
                     value=numpy_helper.from_array(np.zeros(1, np.float32)))
        wide = g.concat(scores, spare, axis=1)
        picked = g.op("GatherElements", wide, ids, axis=1)
        penalized = g.op("Where", g.op("Less", picked, g.scalar(0.0, np.float32)),
                         g.op("Mul", picked, repetition_penalty), g.op("Div", picked, repetition_penalty))
        scores = g.op("Slice", g.op("ScatterElements", wide, ids, penalized, axis=1), g.i64(0), g.i64(vocab),
                      g.i64(1))
    else:
        picked = g.op("GatherElements", scores, seqs, axis=1)
        penalized = g.op("Where", g.op("Less", picked, g.scalar(0.0, np.float32)),
                         g.op("Mul", picked, repetition_penalty), g.op("Div", picked, repetition_penalty))
        scores = g.op("ScatterElements", scores, seqs, penalized, axis=1)
    n = spec.no_repeat_ngram_size
    if n > 0:
        scores = _no_repeat_ngram(g, scores, seqs, cur_len, n, vocab)
    # MinLength / MinNewTokensLength: EOS ids -> -inf while cur_len < max(min_length, prompt + min_new_tokens).
    eos_mask = np.zeros(vocab, dtype=bool)
    eos_mask[list(spec.eos_token_ids)] = True
    too_short = g.op("Less", cur_len, min_len_eff)
    ban = g.op("And", g.const(eos_mask, bool), too_short)
    return g.op("Where", ban, g.scalar(-np.inf, np.float32), scores)


def _warpers(g: _Graph, scores: str, min_keep: int, vocab: int) -> str:
    """TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper (in generate's order) on (R, V) scores.

    Neutral values are exact identities (x / 1; top_k 0 keeps all V; top_p 1 removes only tokens whose softmax is
    already 0), so one graph serves requests with and without each warper.
    """
    scores = g.op("Div", scores, g.squeeze("temperature", 0))
    top_k = g.cast("top_k", TensorProto.INT64)  # [1]
    vocab_1 = g.i64(vocab)
    k = g.op("Where", g.op("Greater", top_k, g.i64(0)),
             g.op("Min", g.op("Max", top_k, g.i64(min_keep)), vocab_1), vocab_1)
    kth = g.op("Gather", g.op("TopK", scores, k, axis=-1, largest=1, sorted=1, outputs=2)[0],
               g.op("Sub", k, g.i64(1)), axis=1)  # (R, 1)
    scores = g.op("Where", g.op("Less", scores, kth), g.scalar(-np.inf, np.float32), scores)
    ascending, order = g.op("TopK", scores, vocab_1, axis=-1, largest=0, sorted=1, outputs=2)
    cumulative = g.op("CumSum", g.op("Softmax", ascending, axis=-1), g.scalar(1, np.int64))
    # 1 - top_p as Python computes it (double), compared in float32.
    cut = g.cast(g.op("Sub", g.scalar(1.0, np.float64), g.cast(g.squeeze("top_p", 0), TensorProto.DOUBLE)),
                 TensorProto.FLOAT)
    remove = g.op("LessOrEqual", cumulative, cut)
    tail = g.op("GreaterOrEqual", g.op("Range", g.scalar(0, np.int64), g.scalar(vocab, np.int64),
                                       g.scalar(1, np.int64)), g.scalar(vocab - min_keep, np.int64))
    remove = g.cast(g.op("And", remove, g.op("Not", tail)), TensorProto.FLOAT)
    removed = g.op("ScatterElements", g.op("Mul", scores, g.scalar(0.0, np.float32)), order, remove, axis=1)
    return g.op("Where", g.cast(removed, TensorProto.BOOL), g.scalar(-np.inf, np.float32), scores)


#: Counter-based PRNG modulus (a prime below 2^31: every product of two residues fits in int64).
PRNG_MODULUS = 2_147_483_647


def _uniform(g: _Graph, seed: str, step: str, index: str) -> str:
    """Uniform (0, 1) float32 noise from (request seed, step, element index), integer ops only.

    RandomUniform's seed is an attribute (one stream per session), so a per-request seed cannot go through it.
    The hash mixes multiplicative (MINSTD) rounds with squarings mod 2^31 - 1, all in int64 without overflow;
    the same (seed, step, index) always gives the same value, in any batch composition of the same shape.
    """
    m = g.scalar(PRNG_MODULUS, np.int64)

    def mod(x: str) -> str:
        return g.op("Mod", x, m)

    key = mod(g.op("Add", mod(g.op("Mul", mod(seed), g.scalar(16807, np.int64))),
                   mod(g.op("Mul", step, g.scalar(48271, np.int64)))))
    key = mod(g.op("Add", g.op("Mul", key, key), g.scalar(1_013_904_223, np.int64)))
    x = mod(g.op("Add", g.op("Add", mod(index), key), g.scalar(1, np.int64)))
    x = mod(g.op("Mul", x, g.scalar(48271, np.int64)))
    x = mod(g.op("Add", g.op("Mul", x, x), key))
    x = mod(g.op("Add", g.op("Mul", x, g.scalar(69621, np.int64)), g.scalar(12345, np.int64)))
    x = mod(g.op("Add", g.op("Mul", x, x), g.scalar(2_654_435_761 % PRNG_MODULUS, np.int64)))
    x = mod(g.op("Mul", x, g.scalar(16807, np.int64)))
    u = g.op("Div", g.op("Add", g.cast(x, TensorProto.DOUBLE), g.scalar(0.5, np.float64)),
             g.scalar(float(PRNG_MODULUS), np.float64))
    return g.cast(u, TensorProto.FLOAT)


def _no_repeat_ngram(g: _Graph, scores: str, seqs: str, cur_len: str, n: int, vocab: int) -> str:
    """NoRepeatNGramLogitsProcessor: ban t when (last n-1 tokens, t) already occurred (cur_len + 1 >= n)."""
    # Windows start at j = 0..cur_len-n (W of them); window j matches when seqs[j+i] == seqs[cur_len-n+1+i] for
    # every i < n-1, and then bans seqs[j+n-1]. W <= 0 gives empty slices: nothing banned.
    width = g.op("Sub", cur_len, g.i64(n - 1))  # W = cur_len - n + 1
    width = g.op("Max", width, g.i64(0))
    rows = g.shape_of(seqs, 0, 1)
    match = g.op("Expand", g.scalar(True, bool), g.concat(rows, width))
    for i in range(n - 1):
        window = g.op("Slice", seqs, g.i64(i), g.op("Add", width, g.i64(i)), g.i64(1))
        last = g.op("Slice", seqs, g.op("Add", g.op("Sub", cur_len, g.i64(n - 1)), g.i64(i)),
                    g.op("Add", g.op("Sub", cur_len, g.i64(n - 1)), g.i64(i + 1)), g.i64(1))
        match = g.op("And", match, g.op("Equal", window, last))
    banned = g.op("Slice", seqs, g.i64(n - 1), g.op("Add", width, g.i64(n - 1)), g.i64(1))
    # Non-matching windows write into a spare column V, so duplicate indices always carry the same value.
    target = g.op("Where", match, banned, g.i64(vocab))
    zeros = g.op("ConstantOfShape", g.concat(rows, g.i64(vocab + 1)),
                 value=numpy_helper.from_array(np.zeros(1, np.float32)))
    ones = g.op("Expand", g.scalar(1.0, np.float32), g.shape_of(target, 0))
    hit = g.op("ScatterElements", zeros, target, ones, axis=1)
    hit = g.op("Slice", hit, g.i64(0), g.i64(vocab), g.i64(1))
    return g.op("Where", g.cast(hit, TensorProto.BOOL), g.scalar(-np.inf, np.float32), scores)


def _is_eos(g: _Graph, tokens: str, eos_ids: tuple[int, ...]) -> str:
    hit = None
    for eos in eos_ids:
        eq = g.op("Equal", tokens, g.scalar(eos, np.int64))
        hit = eq if hit is None else g.op("Or", hit, eq)
    assert hit is not None
    return hit


# ---------------------------------------------------------------------------------------------------------------
# Decoder placement
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Decoder:
    model: onnx.ModelProto
    num_layers: int
    past_type: int
    ids_type: int
    opset: int

    @classmethod
    def load(cls, path: Path) -> _Decoder:
        model = onnx.load(str(path), load_external_data=True)
        names = [i.name for i in model.graph.input]
        expected = ["input_ids", "position_ids", "attention_mask"]
        if names[:3] != expected or not all(n.startswith("past_") for n in names[3:]):
            raise GenExportError(f"decoder inputs {names[:4]}... are not the GPT-2 subgraph contract",
                                 "export the decoder with genexport (gen_export.export.decoder)")
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset < 13:
            raise GenExportError(f"decoder opset {opset} is below 13", "export the decoder with --opset 17")
        types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
        return cls(model, len(names) - 3, types["past_0"], types["input_ids"], opset)

    def logits_projection_index(self) -> int | None:
        """Index of the node projecting the hidden state onto the vocabulary (fp32, int8 or int4), or None."""
        from gen_export.runtime import logits_projection

        node = logits_projection(self.model.graph)
        if node is None:
            return None
        return next(i for i, n in enumerate(self.model.graph.node) if n is node)

    def body_nodes(self, inputs: dict[str, str], outputs: dict[str, str]) -> list[onnx.NodeProto]:
        """The decoder's nodes with its graph inputs/outputs renamed to the Loop body's names."""
        rename = inputs | outputs
        nodes = []
        for node in self.model.graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            for i, name in enumerate(copy.input):
                if name in rename:
                    copy.input[i] = rename[name]
            for i, name in enumerate(copy.output):
                if name in rename:
                    copy.output[i] = rename[name]
            nodes.append(copy)
        return nodes


# ---------------------------------------------------------------------------------------------------------------
# Graph assembly
# ---------------------------------------------------------------------------------------------------------------

def _tensor_input(name: str, elem: int, dims: list[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


_ELEMENT_TYPES = {"int32": TensorProto.INT32, "int64": TensorProto.INT64, "float32": TensorProto.FLOAT}


def _declared(spec: TensorSpec) -> onnx.ValueInfoProto:
    """A graph input or output as `gen_export.contract` declares it."""
    return _tensor_input(spec.name, _ELEMENT_TYPES[spec.dtype], list(spec.dims))


def _prologue(g: _Graph, spec: HfSearchSpec, dec: _Decoder, beams: str | None) -> dict[str, str]:
    """Common values of the outer graph: ids, mask, lengths, and the decoder's first inputs (R = B * beams)."""
    v: dict[str, str] = {}
    ids = g.cast("input_ids", TensorProto.INT64)
    mask = g.cast("attention_mask", TensorProto.INT64)
    v["B"] = g.shape_of(ids, 0, 1)
    v["P"] = g.squeeze(g.shape_of(ids, 1, 2), 0)  # scalar
    new_max = g.squeeze(g.cast("max_new_tokens", TensorProto.INT64), 0)
    max_len = g.squeeze(g.cast("max_length", TensorProto.INT64), 0)
    # generate: max_new_tokens (when set) wins over max_length.
    v["L"] = g.op("Where", g.op("Greater", new_max, g.scalar(0, np.int64)),
                  g.op("Add", v["P"], new_max), max_len)
    min_new = g.squeeze(g.cast("min_new_tokens", TensorProto.INT64), 0)
    min_len = g.squeeze(g.cast("min_length", TensorProto.INT64), 0)
    # generate: a set min_new_tokens replaces min_length by prompt + min_new_tokens (it "takes precedence").
    v["MIN"] = g.op("Where", g.op("Greater", min_new, g.scalar(0, np.int64)), g.op("Add", v["P"], min_new), min_len)
    v["rep"] = g.squeeze("repetition_penalty", 0)
    if beams is not None:
        v["K"] = beams
        rows_shape = g.concat(v["B"], g.unsqueeze(beams, 0))
        expand_to = g.concat(rows_shape, g.shape_of(ids, 1, 2))
        v["R"] = g.op("Mul", v["B"], g.unsqueeze(beams, 0))  # [1]
        flat_shape = g.concat(v["R"], g.shape_of(ids, 1, 2))
        v["ids3"] = g.op("Expand", g.unsqueeze(ids, 1), expand_to)  # (B, K, P)
        mask_flat = g.op("Reshape", g.op("Expand", g.unsqueeze(mask, 1), expand_to), flat_shape)
    else:
        v["R"] = v["B"]
        mask_flat = mask
        v["ids2"] = ids
    positions = g.op("Max", g.op("Mul", g.op("Sub", g.op("CumSum", mask_flat, g.scalar(1, np.int64)),
                                                g.scalar(1, np.int64)), mask_flat), g.scalar(0, np.int64))
    flat_ids = ids if beams is None else g.op("Reshape", v["ids3"], flat_shape)
    # Left padding per row (index of the first real token), as transformers 5's repetition penalty skips it.
    v["pad_len"] = g.cast(g.op("ArgMax", g.cast(g.op("Not", g.op("Equal", mask_flat, g.scalar(0, np.int64))),
                                                 TensorProto.INT32), axis=1, keepdims=1), TensorProto.INT64)
    v["dec_ids"] = g.cast(flat_ids, dec.ids_type)
    v["dec_pos"] = g.cast(positions, dec.ids_type)
    v["dec_mask"] = g.cast(mask_flat, dec.ids_type)
    heads, head_dim = _past_dims(dec)
    past_shape = g.concat(g.i64(2), v["R"], g.i64(heads), g.i64(0), g.i64(head_dim))
    zero = numpy_helper.from_array(np.zeros(1, helper.tensor_dtype_to_np_dtype(dec.past_type)))
    v["past"] = g.op("ConstantOfShape", past_shape, value=zero)
    v["trips"] = g.op("Sub", v["L"], v["P"])
    return v


def _past_dims(dec: _Decoder) -> tuple[int, int]:
    dims = dec.model.graph.input[3].type.tensor_type.shape.dim
    if len(dims) != 5 or not dims[2].dim_value or not dims[4].dim_value:
        raise GenExportError("decoder past_0 has no static heads/head_dim", "export the decoder with genexport")
    return dims[2].dim_value, dims[4].dim_value


def _decoder_step(b: _Graph, dec: _Decoder, dec_ids: str, dec_pos: str, dec_mask: str,
                  pasts: list[str]) -> tuple[str, list[str]]:
    logits = b.name("logits")
    presents = [b.name(f"present_{i}") for i in range(dec.num_layers)]
    inputs = {"input_ids": dec_ids, "position_ids": dec_pos, "attention_mask": dec_mask}
    inputs |= {f"past_{i}": p for i, p in enumerate(pasts)}
    outputs = {"logits": logits} | {f"present_{i}": p for i, p in enumerate(presents)}
    nodes = dec.body_nodes(inputs, outputs)
    projection = dec.logits_projection_index()
    if projection is None:
        b.nodes.extend(nodes)
    else:
        # Only the last position's logits are used: slice the hidden state before the vocabulary projection
        # (what onnxruntime's first-step decoder does; on the prompt step it saves prompt_len - 1 projections).
        b.nodes.extend(nodes[:projection])
        node = nodes[projection]
        node.input[0] = b.op("Slice", node.input[0], b.i64(-1), b.i64(np.iinfo(np.int64).max), b.i64(1))
        b.nodes.extend(nodes[projection:])
    last = b.op("Gather", logits, b.scalar(-1, np.int64), axis=1)  # (R, V)
    return b.cast(last, TensorProto.FLOAT), presents


def _beam_body(spec: HfSearchSpec, dec: _Decoder, v: dict[str, str], vocab: int) -> onnx.GraphProto:
    b = _Graph("body", dec.opset)
    n_keep_factor = max(2, 1 + len(spec.eos_token_ids))
    layer_names = [f"body_past_{i}" for i in range(dec.num_layers)]
    carried = ["b_dec_ids", "b_dec_pos", "b_dec_mask", *layer_names, "b_run_seq", "b_run_scores", "b_fin_seq",
               "b_fin_scores", "b_fin_flag", "b_fin_len", "b_unsat"]
    K, B, P, L = v["K"], v["B"], v["P"], v["L"]
    cur_len = b.op("Add", P, "b_iter")  # scalar int64
    next_len = b.op("Add", cur_len, b.scalar(1, np.int64))
    K1 = b.unsqueeze(K, 0)
    keep = b.op("Mul", K1, b.scalar(n_keep_factor, np.int64))  # [1]
    R = v["R"]

    logits, presents = _decoder_step(b, dec, "b_dec_ids", "b_dec_pos", "b_dec_mask", layer_names)
    log_probs = b.op("LogSoftmax", logits, axis=-1)
    flat_seq = b.op("Reshape", "b_run_seq", b.concat(R, b.unsqueeze(cur_len, 0)))
    log_probs = _process(b, log_probs, flat_seq, cur_len, v, spec, vocab)
    if spec.mode.sampling:
        log_probs = _warpers(b, log_probs, 1 + len(spec.eos_token_ids), vocab)
    acc = b.op("Add", b.op("Reshape", log_probs, b.concat(B, K1, b.i64(vocab))), b.unsqueeze("b_run_scores", 2))
    acc = b.op("Reshape", acc, b.concat(B, b.i64(-1)))  # (B, K*V)
    if spec.mode.sampling:
        # multinomial(softmax(acc), beams_to_keep) without replacement == top-k of acc + Gumbel noise (Plackett-
        # Luce); then sorted by log-prob descending, as transformers 5 does (4.57 keeps the draw order).
        index = b.op("Reshape", b.op("Range", b.scalar(0, np.int64), b.op("Mul", b.squeeze(B, 0),
                                                                            b.op("Mul", K, b.scalar(vocab, np.int64))),
                                      b.scalar(1, np.int64)), b.op("Shape", acc))
        u = _uniform(b, v["seed"], "b_iter", index)
        gumbel = b.op("Neg", b.op("Log", b.op("Neg", b.op("Log", u))))
        _, drawn = b.op("TopK", b.op("Add", acc, gumbel), keep, axis=-1, largest=1, sorted=1, outputs=2)
        drawn_lp = b.op("GatherElements", acc, drawn, axis=1)
        topk_lp, order = b.op("TopK", drawn_lp, keep, axis=-1, largest=1, sorted=1, outputs=2)
        topk_idx = b.op("GatherElements", drawn, order, axis=1)
    else:
        topk_lp, topk_idx = b.op("TopK", acc, keep, axis=-1, largest=1, sorted=1, outputs=2)
    V = b.scalar(vocab, np.int64)
    src_beam = b.op("Div", topk_idx, V)
    tokens = b.op("Mod", topk_idx, V)
    batch_offset = b.unsqueeze(b.op("Mul", b.op("Range", b.scalar(0, np.int64), b.squeeze(B, 0),
                                                     b.scalar(1, np.int64)), K), 1)  # (B, 1)
    src_row = b.op("Add", src_beam, batch_offset)  # (B, keep): rows of the flattened running beams
    topk_seq = b.concat(b.op("Gather", flat_seq, src_row, axis=0), b.unsqueeze(tokens, 2), axis=2)
    hits = b.op("Or", _is_eos(b, tokens, spec.eos_token_ids),
                b.op("GreaterOrEqual", next_len, L))  # (B, keep)

    # _get_running_beams_for_next_iteration
    run_lp = b.mask_add(topk_lp, hits)
    _, next_sel = b.op("TopK", run_lp, K1, axis=-1, largest=1, sorted=1, outputs=2)
    keep_offset = b.unsqueeze(b.op("Mul", b.op("Range", b.scalar(0, np.int64), b.squeeze(B, 0),
                                                    b.scalar(1, np.int64)), b.squeeze(keep, 0)), 1)
    flat_topk_seq = b.op("Reshape", topk_seq, b.concat(b.op("Mul", B, keep), b.unsqueeze(next_len, 0)))
    run_seq = b.op("Gather", flat_topk_seq, b.op("Add", next_sel, keep_offset), axis=0)  # (B, K, cur_len+1)
    run_scores = b.op("GatherElements", run_lp, next_sel, axis=1)
    beam_rows = b.op("Reshape", b.op("GatherElements", src_row, next_sel, axis=1), b.i64(-1))  # (R,)

    # _update_finished_beams
    top_mask = b.op("Less", b.op("Range", b.scalar(0, np.int64), b.squeeze(keep, 0), b.scalar(1, np.int64)), K)
    did_finish = b.op("And", hits, top_mask)
    gen_len = b.op("Sub", next_len, P)
    fin_lp = b.op("Div", topk_lp, b.pow_length(gen_len, b.squeeze("length_penalty", 0)))
    if spec.early_stopping is EarlyStopping.TRUE:
        fin_lp = b.mask_add(fin_lp, b.all_("b_fin_flag", [1]))
    fin_lp = b.mask_add(fin_lp, b.op("Not", "b_unsat"))
    fin_lp = b.mask_add(fin_lp, b.op("Not", did_finish))
    fill_shape = b.concat(B, K1, b.i64(1))
    fill = b.op("ConstantOfShape", fill_shape, value=numpy_helper.from_array(
        np.array([spec.fill_token_id], np.int64)))
    merged_seq = b.concat(b.concat("b_fin_seq", fill, axis=2), topk_seq, axis=1)  # (B, K + keep, cur_len+1)
    merged_scores = b.concat("b_fin_scores", fin_lp, axis=1)
    merged_flag = b.concat("b_fin_flag", did_finish, axis=1)
    merged_len = b.concat("b_fin_len", b.op("Expand", gen_len, b.op("Shape", tokens)), axis=1)
    _, merge_sel = b.op("TopK", merged_scores, K1, axis=-1, largest=1, sorted=1, outputs=2)
    width = b.op("Add", K1, keep)
    merge_offset = b.unsqueeze(b.op("Mul", b.op("Range", b.scalar(0, np.int64), b.squeeze(B, 0),
                                                     b.scalar(1, np.int64)), b.squeeze(width, 0)), 1)
    fin_seq = b.op("Gather", b.op("Reshape", merged_seq, b.concat(b.op("Mul", B, width), b.unsqueeze(next_len, 0))),
                   b.op("Add", merge_sel, merge_offset), axis=0)
    fin_scores = b.op("GatherElements", merged_scores, merge_sel, axis=1)
    fin_flag = b.op("GatherElements", merged_flag, merge_sel, axis=1)
    fin_len = b.op("GatherElements", merged_len, merge_sel, axis=1)

    # _check_early_stop_heuristic (with cur_len already advanced)
    hyp_len = b.op("Sub", next_len, P)
    if spec.early_stopping is EarlyStopping.NEVER:
        positive = b.op("Greater", b.squeeze("length_penalty", 0), b.scalar(0.0, np.float32))
        hyp_len = b.op("Where", positive, b.op("Sub", L, P), hyp_len)
    best = b.op("Div", b.op("Slice", run_scores, b.i64(0), b.i64(1), b.i64(1)),
                b.pow_length(hyp_len, b.squeeze("length_penalty", 0)))
    worst = b.op("Where", fin_flag, b.reduce("ReduceMin", fin_scores, [1]), b.scalar(NEG, np.float32))
    unsat = b.op("And", "b_unsat", b.any_(b.op("Greater", best, worst), [1]))
    # _beam_search_has_unfinished_sequences
    go_on = b.op("And", b.any_(unsat, [0, 1], keepdims=0), b.op("Not", b.all_(hits, [0, 1], keepdims=0)))
    if spec.early_stopping is EarlyStopping.TRUE:
        go_on = b.op("And", go_on, b.op("Not", b.all_(fin_flag, [0, 1], keepdims=0)))

    # Next decoder inputs: the chosen beams' last token, their reordered cache, one more mask column.
    ones = b.op("ConstantOfShape", b.concat(R, b.i64(1)), value=numpy_helper.from_array(
        np.ones(1, helper.tensor_dtype_to_np_dtype(dec.ids_type))))
    dec_mask = b.concat("b_dec_mask", ones, axis=1)
    dec_pos = b.op("Sub", b.reduce("ReduceSum", dec_mask, [1]), b.cast(b.scalar(1, np.int64), dec.ids_type))
    last_tok = b.op("Slice", run_seq, b.i64(-1), b.i64(np.iinfo(np.int64).max), b.i64(2))
    dec_ids = b.cast(b.op("Reshape", last_tok, b.concat(R, b.i64(1))), dec.ids_type)
    new_past = [b.op("Gather", p, beam_rows, axis=1) for p in presents]

    outs = [go_on, dec_ids, dec_pos, dec_mask, *new_past, run_seq, run_scores, fin_seq, fin_scores, fin_flag,
            fin_len, unsat]
    out_names = ["b_cond_out", *[f"{c}_out" for c in carried]]
    for src, dst in zip(outs, out_names, strict=True):
        b.nodes.append(helper.make_node("Identity", [src], [dst], name=f"body/{dst}"))
    inputs = [_tensor_input("b_iter", TensorProto.INT64, []), _tensor_input("b_cond", TensorProto.BOOL, [])]
    types = _carried_types(dec, carried)
    inputs += [_tensor_input(c, types[c], None) for c in carried]
    outputs = [_tensor_input("b_cond_out", TensorProto.BOOL, [])]
    outputs += [_tensor_input(f"{c}_out", types[c], None) for c in carried]
    return helper.make_graph(b.nodes, "beam_step", inputs, outputs)


def _carried_types(dec: _Decoder, carried: list[str]) -> dict[str, int]:
    types = {}
    for c in carried:
        if c.startswith("body_past_"):
            types[c] = dec.past_type
        elif c in ("b_dec_ids", "b_dec_pos", "b_dec_mask"):
            types[c] = dec.ids_type
        elif c.endswith("scores"):
            types[c] = TensorProto.FLOAT
        elif c in ("b_fin_flag", "b_unsat", "b_unfinished"):
            types[c] = TensorProto.BOOL
        else:
            types[c] = TensorProto.INT64
    return types


def _greedy_body(spec: HfSearchSpec, dec: _Decoder, v: dict[str, str], vocab: int) -> onnx.GraphProto:
    b = _Graph("body", dec.opset)
    layer_names = [f"body_past_{i}" for i in range(dec.num_layers)]
    carried = ["b_dec_ids", "b_dec_pos", "b_dec_mask", *layer_names, "b_seq", "b_unfinished"]
    P, L = v["P"], v["L"]
    cur_len = b.op("Add", P, "b_iter")
    next_len = b.op("Add", cur_len, b.scalar(1, np.int64))
    logits, presents = _decoder_step(b, dec, "b_dec_ids", "b_dec_pos", "b_dec_mask", layer_names)
    scores = _process(b, logits, "b_seq", cur_len, v, spec, vocab)
    if spec.mode.sampling:
        # multinomial(softmax(scores), 1) by inverse CDF: one uniform per row and step; a token whose
        # probability is 0 can never be the first whose cumulative mass exceeds u * total.
        cumulative = b.op("CumSum", b.op("Softmax", _warpers(b, scores, 1, vocab), axis=-1), b.scalar(1, np.int64))
        total = b.op("Slice", cumulative, b.i64(-1), b.i64(vocab), b.i64(1))  # (R, 1)
        rows = b.op("Range", b.scalar(0, np.int64), b.squeeze(v["R"], 0), b.scalar(1, np.int64))
        u = b.unsqueeze(_uniform(b, v["seed"], "b_iter", rows), 1)
        below = b.cast(b.op("LessOrEqual", cumulative, b.op("Mul", u, total)), TensorProto.INT64)
        tokens = b.op("Min", b.reduce("ReduceSum", below, [1], keepdims=0), b.scalar(vocab - 1, np.int64))
    else:
        tokens = b.op("ArgMax", scores, axis=-1, keepdims=0)  # first maximum, as torch.argmax
    tokens = b.op("Where", "b_unfinished", tokens, b.scalar(spec.pad_token_id, np.int64))
    seq = b.concat("b_seq", b.unsqueeze(tokens, 1), axis=1)
    stop = b.op("Or", _is_eos(b, tokens, spec.eos_token_ids), b.op("GreaterOrEqual", next_len, L))
    unfinished = b.op("And", "b_unfinished", b.op("Not", stop))
    go_on = b.any_(unfinished, [0], keepdims=0)
    ones = b.op("ConstantOfShape", b.concat(v["R"], b.i64(1)), value=numpy_helper.from_array(
        np.ones(1, helper.tensor_dtype_to_np_dtype(dec.ids_type))))
    dec_mask = b.concat("b_dec_mask", ones, axis=1)
    dec_pos = b.op("Sub", b.reduce("ReduceSum", dec_mask, [1]), b.cast(b.scalar(1, np.int64), dec.ids_type))
    dec_ids = b.cast(b.unsqueeze(tokens, 1), dec.ids_type)
    outs = [go_on, dec_ids, dec_pos, dec_mask, *presents, seq, unfinished]
    out_names = ["b_cond_out", *[f"{c}_out" for c in carried]]
    for src, dst in zip(outs, out_names, strict=True):
        b.nodes.append(helper.make_node("Identity", [src], [dst], name=f"body/{dst}"))
    types = _carried_types(dec, carried)
    inputs = [_tensor_input("b_iter", TensorProto.INT64, []), _tensor_input("b_cond", TensorProto.BOOL, [])]
    inputs += [_tensor_input(c, types[c], None) for c in carried]
    outputs = [_tensor_input("b_cond_out", TensorProto.BOOL, [])]
    outputs += [_tensor_input(f"{c}_out", types[c], None) for c in carried]
    return helper.make_graph(b.nodes, "greedy_step", inputs, outputs)


def build_hf_search_model(decoder_onnx: Path, spec: HfSearchSpec) -> onnx.ModelProto:
    """The generation graph (in memory) around the decoder at `decoder_onnx`."""
    if not spec.eos_token_ids:
        raise GenExportError("no EOS token id", "set eos_token_id in config.json or generation_config.json")
    dec = _Decoder.load(decoder_onnx)
    vocab = spec.vocab_size
    g = _Graph("outer", dec.opset)
    beam = spec.mode.beams
    beams = g.squeeze(g.cast("num_beams", TensorProto.INT64), 0) if beam else None
    v = _prologue(g, spec, dec, beams)
    if spec.mode.sampling:
        # seed < 0: a fresh random key per call (RandomUniform without a seed attribute).
        seed = g.squeeze(g.cast("seed", TensorProto.INT64), 0)
        fresh = g.squeeze(g.cast(g.op("Floor", g.op("RandomUniform", dtype=TensorProto.DOUBLE, shape=[1],
                                                    high=float(PRNG_MODULUS - 1))), TensorProto.INT64), 0)
        v["seed"] = g.op("Where", g.op("Less", seed, g.scalar(0, np.int64)), fresh, seed)
    layers = dec.num_layers
    if beam:
        B, K = v["B"], v["K"]
        K1 = g.unsqueeze(K, 0)
        bk = g.concat(B, K1)
        beam0 = g.op("Equal", g.op("Range", g.scalar(0, np.int64), K, g.scalar(1, np.int64)), g.scalar(0, np.int64))
        run_scores = g.op("Expand", g.op("Where", beam0, g.scalar(0.0, np.float32), g.scalar(NEG, np.float32)), bk)
        fin_scores = g.op("Expand", g.scalar(NEG, np.float32), bk)
        fin_flag = g.op("Expand", g.scalar(False, bool), bk)
        fin_len = g.op("Expand", g.scalar(0, np.int64), bk)
        unsat = g.op("Expand", g.scalar(True, bool), g.concat(B, g.i64(1)))
        body = _beam_body(spec, dec, v, vocab)
        init = [v["dec_ids"], v["dec_pos"], v["dec_mask"], *[v["past"]] * layers, v["ids3"], run_scores, v["ids3"],
                fin_scores, fin_flag, fin_len, unsat]
        finals = g.op("Loop", v["trips"], "", *init, outputs=len(init), body=body)
        fin_seq, fin_scores_out, fin_len_out = finals[3 + layers + 2], finals[3 + layers + 3], finals[3 + layers + 5]
        nrs = g.cast("num_return_sequences", TensorProto.INT64)
        seq = g.op("Slice", fin_seq, g.i64(0), nrs, g.i64(1))
        scores = g.op("Slice", fin_scores_out, g.i64(0), nrs, g.i64(1))
        longest = g.reduce("ReduceMax", g.op("Slice", fin_len_out, g.i64(0), nrs, g.i64(1)), [0, 1], keepdims=0)
        out_len = g.op("Add", v["P"], longest)
        seq = g.op("Slice", seq, g.unsqueeze(g.scalar(0, np.int64), 0), g.unsqueeze(out_len, 0), g.i64(2))
        g.nodes.append(helper.make_node("Cast", [seq], ["sequences"], name="outer/sequences", to=TensorProto.INT32))
        g.nodes.append(helper.make_node("Identity", [scores], ["sequences_scores"], name="outer/sequences_scores"))
        outputs = [_declared(t) for t in BEAM_OUTPUTS]
    else:
        unfinished = g.op("Expand", g.scalar(True, bool), v["B"])
        body = _greedy_body(spec, dec, v, vocab)
        init = [v["dec_ids"], v["dec_pos"], v["dec_mask"], *[v["past"]] * layers, v["ids2"], unfinished]
        finals = g.op("Loop", v["trips"], "", *init, outputs=len(init), body=body)
        g.nodes.append(helper.make_node("Cast", [finals[3 + layers]], ["sequences"], name="outer/sequences",
                                         to=TensorProto.INT32))
        outputs = [_declared(t) for t in ONE_SEQUENCE_OUTPUTS]

    inputs = [_declared(spec) for spec in input_specs(hf_graph_inputs(spec.mode))]
    defaults = [numpy_helper.from_array(np.array([spec.max_new_tokens], np.int32), "max_new_tokens"),
                numpy_helper.from_array(np.array([spec.min_new_tokens], np.int32), "min_new_tokens")]
    if spec.mode.sampling:
        defaults += [numpy_helper.from_array(np.array([-1], np.int32), "seed"),
                     numpy_helper.from_array(np.array([spec.temperature], np.float32), "temperature"),
                     numpy_helper.from_array(np.array([spec.top_k], np.int32), "top_k"),
                     numpy_helper.from_array(np.array([spec.top_p], np.float32), "top_p")]
    graph = helper.make_graph(g.nodes, f"{spec.mode.value}_search_transformers_rules", inputs, outputs,
                              initializer=[*defaults, *dec.model.graph.initializer])
    model = helper.make_model(graph, opset_imports=list(dec.model.opset_import),
                              producer_name="genexport", producer_version="hf_search")
    # IR version of the decoder (what it was checked with); >= 4 lets an initializer default a graph input.
    model.ir_version = max(dec.model.ir_version, 8)
    return model


def build_hf_search_graph(decoder_onnx: Path, output: Path, spec: HfSearchSpec) -> Path:
    """Write the generation graph beside nothing else; external data when the decoder needs it."""
    model = build_hf_search_model(decoder_onnx, spec)
    output = Path(output)
    if needs_external_data(decoder_onnx):
        onnx.save_model(model, str(output), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=output.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(output))
    return output


def search_node_domains(path: Path) -> dict[str, set[str]]:
    """Operator domains used by the search logic (every node not copied from the decoder) and the decoder's.

    Decoder nodes are recognised by their names (node names the generator gives itself all start with
    `outer/` or `body/`).
    """
    model = onnx.load(str(path), load_external_data=False)
    search: set[str] = set()
    decoder: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ours = node.name.startswith(("outer/", "body/"))
            (search if ours else decoder).add(node.domain or "ai.onnx")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(model.graph)
    return {"search": search, "decoder": decoder}
