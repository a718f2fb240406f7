"""`genexport beam` (and the other search modes): one ONNX file that generates, proven by parity.

Pipeline: open and validate the checkpoint -> export the GPT-2-contract decoder (torch.onnx) ->
validate it against PyTorch -> fuse onnxruntime's search operator around it -> run the parity matrix
against `model.generate` -> write `OUT/<mode>_search.onnx`, the tokenizer files and `genexport.json`.
Everything is assembled in a staging folder and moved into place only when every check passed.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gen_export.artifacts import (
    Manifest,
    check_output_target,
    copy_tokenizer_files,
    reserved_outputs,
    staged_output,
)
from gen_export.contract import GenerationDefaults  # re-exported: the per-call defaults live in the contract
from gen_export.errors import GenExportError, ParityError
from gen_export.export.checkpoint import check_tokenizer
from gen_export.export.decoder import (
    DECODER_FILE,
    DEFAULT_ATOL,
    DecoderValidation,
    LoadedDecoder,
    export_decoder_onnx,
    load_decoder,
    require_passed,
    validate_decoder,
)
from gen_export.export.export_spec import DEFAULT_OPSET
from gen_export.manifest import GenerationSettings, OptimizeRecord, RecordedDefaults, SearchRecord
from gen_export.options import GRAPH_FILES
from gen_export.progress import Steps
from gen_export.runtime import graph_io, make_session
from gen_export.search.fusion import optimize_decoder
from gen_export.search.hf_search import (
    HfOptions,
    HfSearchSpec,
    build_hf_search_graph,
    check_rules,
    hf_fed_inputs,
    hf_graph_inputs,
)
from gen_export.search.precision import Precision, check_precision, quantize_decoder
from gen_export.search.search_graph import (
    SearchGraphSpec,
    SearchMode,
    build_search_graph,
    has_init_decoder,
    search_graph_inputs,
)
from gen_export.validate import (
    check_generation_values,
    require_bool,
    require_float,
    require_opset,
    require_path,
    require_prompts,
)
from gen_export.verify.agreement import measure_agreement
from gen_export.verify.hf_parity import HfParityReport, as_hf_case, hf_matrix, run_hf_parity
from gen_export.verify.hf_sampling import HfSamplingReport, SamplingSettings, run_hf_sampling_checks
from gen_export.verify.parity import ParityCase, ParityReport, check_flags, run_parity
from gen_export.verify.sampling_checks import GREEDY_TOP_P, SamplingReport, run_sampling_checks

#: Prompts used when the user gives none: plain biomedical English any BPE vocabulary can encode.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "the patient was treated with",
    "this protein is expressed in",
    "the results suggest that",
    "expression of the gene was",
    "mutations in this gene cause",
    "the drug inhibits",
)
TOKENIZER_DIR = "tokenizer"




def graph_file(mode: SearchMode) -> str:
    return GRAPH_FILES[mode]


@dataclass
class GenerationExportResult:
    output: Path
    graph_onnx: Path
    manifest: Path
    mode: SearchMode
    decoder_validation: DecoderValidation
    #: Token parity (beam, greedy), or the statistical checks of a sampling graph (no token parity).
    parity: ParityReport | SamplingReport | HfParityReport | HfSamplingReport | None
    notes: list[str]
    timings: dict[str, float]


def resolve_lengths(defaults: GenerationDefaults, tokenizer: Any, prompts: tuple[str, ...],
                    max_positions: int) -> GenerationDefaults:
    """Absolute max_length/min_length defaults; a new-token budget counts from the longest (padded) prompt."""
    defaults.check_length_forms()
    longest = max(len(tokenizer(prompt)["input_ids"]) for prompt in prompts)
    changes: dict[str, int] = {}
    if defaults.max_new_tokens is not None:
        changes["max_length"] = longest + defaults.max_new_tokens
        if changes["max_length"] > max_positions:
            raise GenExportError(
                f"the longest parity prompt ({longest} tokens) plus {defaults.max_new_tokens} new tokens is above "
                f"the model's max_position_embeddings {max_positions}",
                f"use --max-new-tokens of at most {max_positions - longest}")
    elif defaults.max_length is None:
        changes["max_length"] = min(64, max_positions)
    if defaults.min_new_tokens is not None:
        changes["min_length"] = longest + defaults.min_new_tokens
    return replace(defaults, **changes)


def length_penalty_note(defaults: GenerationDefaults, mode: SearchMode) -> str | None:
    if mode is SearchMode.BEAM and defaults.length_penalty != 0.0 and defaults.num_beams > 1:
        return (
            f"length_penalty={defaults.length_penalty:g}: onnxruntime scores a finished beam by "
            "log-prob / (prompt + generated length)^lp, transformers by log-prob / generated length^lp; "
            "when beams finish at different lengths they can rank differently (length_penalty=0 agrees "
            "exactly). The parity table marks such cases."
        )
    return None


def default_matrix(
    prompts: tuple[str, ...], tokenizer: Any, defaults: GenerationDefaults, mode: SearchMode,
    max_positions: int, no_repeat_ngram_size: int = 0, new_tokens: int = 24,
) -> list[ParityCase]:
    """The parity cases run after every export: the user's defaults plus flags where implementations part.

    Sampling has none: its random stream is not PyTorch's, so no token parity can be claimed; a sampling
    export runs `sampling_checks` instead.
    """
    if mode is SearchMode.SAMPLING:
        raise ValueError("sampling graphs have no token-parity matrix; see gen_export.verify.sampling_checks")
    tokenizer.padding_side = "left"

    def case(name: str, batch: tuple[str, ...], **changes: Any) -> ParityCase:
        prompt_len = tokenizer(list(batch), return_tensors="pt", padding=True)["input_ids"].shape[1]
        base = defaults.flags(no_repeat_ngram_size)
        # The user's max_length, capped to keep the matrix quick; a too-short one fails here, early.
        # (never below a requested min_length + 1, so --min-new-tokens above the cap still gets checked)
        cap = max(prompt_len + changes.pop("new", new_tokens), base.min_length + 1)
        max_length = min(base.max_length, cap, max_positions)
        min_new = changes.pop("min_new", None)
        flags = replace(base, max_length=max_length, **changes)
        if min_new is not None:
            flags = replace(flags, min_length=min(prompt_len + min_new, max_length - 1))
        check_flags(flags, prompt_len, max_positions)
        return ParityCase(name, batch, flags)

    singles = prompts[:3]
    batch = tuple(prompts[:3]) if len(prompts) >= 3 else tuple(prompts)
    cases = [case(f"prompt {i + 1}", (p,)) for i, p in enumerate(singles)]
    cases.append(case("left-padded batch", batch))
    # Names stay short (the parity table fits 80 columns): beams, returned sequences and penalties have columns.
    if mode is SearchMode.BEAM:
        cases += [
            case("beams 2, lp 0", (prompts[0],), num_beams=2, num_return_sequences=1, length_penalty=0.0),
            case("3 of 4 beams, min", batch[:2], num_beams=4, num_return_sequences=3,
                 length_penalty=0.0, min_new=6),
            case("2 of 5 beams, lp 1", batch, num_beams=5, num_return_sequences=2, length_penalty=1.0),
            case("rep 1.3, lp 0.6", (prompts[-1],), num_beams=4, num_return_sequences=2,
                 length_penalty=0.6, repetition_penalty=1.3),
            case("lp 2.0", batch, num_beams=4, num_return_sequences=1, length_penalty=2.0),
        ]
    else:
        cases += [
            case("min length", (prompts[0],), min_new=8),
            case("rep penalty 1.3", batch, repetition_penalty=1.3),
        ]
    return cases


def read_prompts(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise GenExportError(f"prompts file {path} does not exist", "pass a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise GenExportError(f"prompts file {path} is not UTF-8 text (byte {error.start})",
                             "save the prompts file as UTF-8, one prompt per line") from None
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise GenExportError(f"prompts file {path} has no prompts", "write one prompt per line")
    return prompts


@dataclass(frozen=True)
class SamplingAttributes:
    """What a sampling graph bakes in besides the contract's per-call inputs (onnxruntime's operator takes them
    as attributes; transformers-rules graphs as defaulted inputs)."""

    temperature: float = 1.0
    top_p: float = 1.0

    def validate(self, mode: SearchMode, cases: list[ParityCase] | None) -> None:
        """Sampling attributes only for sampling graphs, in the ranges the operator honours."""
        if mode is not SearchMode.SAMPLING:
            if self.temperature != 1.0 or self.top_p != 1.0:
                raise GenExportError(f"temperature/top_p only apply to sampling, not to {mode.value} search",
                                     "use --search sampling, or drop --temperature/--top-p")
            return
        if not self.temperature > 0:
            raise GenExportError(f"temperature {self.temperature:g} must be > 0", "use e.g. --temperature 1.0")
        if not 0 < self.top_p <= 1:
            raise GenExportError(f"top_p {self.top_p:g} must be in (0, 1]",
                                 "use e.g. --top-p 0.95 (1.0 = no nucleus cut)")
        if cases is not None:
            raise GenExportError(
                "token-parity cases cannot be checked on a sampling graph (its random stream is not PyTorch's)",
                "drop the cases: a sampling export runs statistical checks (gen_export.verify.sampling_checks) instead",
            )


@dataclass(frozen=True)
class GenerationRequest:
    """Everything `export_generation` is asked for; `validate` checks it before any file is touched."""

    model_dir: Path
    output: Path
    mode: SearchMode = SearchMode.BEAM
    defaults: GenerationDefaults | None = None
    no_repeat_ngram_size: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    parity: bool = True
    prompts: tuple[str, ...] | None = None
    cases: list[ParityCase] | None = None
    force: bool = False
    opset: int = DEFAULT_OPSET
    atol: float = DEFAULT_ATOL
    precision: Precision = Precision.FP32
    optimize: bool = False
    rules: str = "onnxruntime"
    hf_options: HfOptions | None = None
    defaults_source: dict[str, str] | None = None
    extra_notes: list[str] | None = None

    def validate(self) -> GenerationRequest:
        """Types, finite numbers and ranges; returns the request with paths and enums normalised."""
        model_dir = require_path("model_dir", self.model_dir)
        output = require_path("output", self.output)
        require_bool("force", self.force)
        require_bool("parity", self.parity)
        require_bool("optimize", self.optimize)
        prompts = require_prompts("prompts", self.prompts)
        mode = SearchMode(self.mode)
        defaults = self.defaults or GenerationDefaults()
        if not isinstance(defaults, GenerationDefaults):
            raise TypeError(f"defaults must be a GenerationDefaults, not {type(defaults).__name__}")
        check_generation_values(defaults, no_repeat_ngram_size=self.no_repeat_ngram_size,
                                temperature=self.temperature, top_p=self.top_p)
        require_opset(self.opset)
        require_float("atol", self.atol, 0.0, 1.0, low_open=True, flag="--atol")
        return replace(self, model_dir=model_dir, output=output, prompts=prompts, mode=mode, defaults=defaults)

    @property
    def sampling(self) -> SamplingAttributes:
        return SamplingAttributes(self.temperature, self.top_p)


@dataclass(frozen=True)
class SearchGraphPlan:
    """Which family builds the graph and what it bakes in: onnxruntime's fused operator (`ort_spec`) or a
    transformers-rules loop (`hf_spec`)."""

    mode: SearchMode
    checkpoint_dir: Path
    ort_spec: SearchGraphSpec
    hf_spec: HfSearchSpec | None = None

    @property
    def step_name(self) -> str:
        return (f"build {self.mode.value} search loop (standard ONNX, transformers rules)" if self.hf_spec
                else f"fuse {self.mode.value} search operator (convert_generation)")

    def build(self, decoder: Path, target: Path) -> Path:
        if self.hf_spec is not None:
            build_hf_search_graph(decoder, target, self.hf_spec)
        else:
            build_search_graph(self.checkpoint_dir, decoder, target, self.ort_spec)
        return target

    def baked(self) -> SearchRecord:
        """What is baked into the graph (the manifest's `settings.search`)."""
        return SearchRecord.from_dict(self.hf_spec.as_dict() if self.hf_spec else self.ort_spec.as_dict())

    def fed_inputs(self) -> list[str]:
        return hf_fed_inputs(self.hf_spec.mode) if self.hf_spec else search_graph_inputs(self.mode)

    def defaulted_inputs(self) -> list[str]:
        if self.hf_spec is None:
            return []
        return [n for n in hf_graph_inputs(self.hf_spec.mode) if n not in hf_fed_inputs(self.hf_spec.mode)]


@dataclass
class GenerationPlan:
    """Stage 1 (`plan_generation`): the opened checkpoint, resolved defaults, the graph plan and the checks."""

    loaded: LoadedDecoder
    tokenizer: Any
    prompts: tuple[str, ...]
    defaults: GenerationDefaults
    graph: SearchGraphPlan
    cases: list[ParityCase] | None
    notes: list[str]


@dataclass
class PreparedDecoder:
    """Stage 2 (`prepare_decoder`): the decoder every later stage uses, validated against PyTorch."""

    path: Path
    validation: DecoderValidation
    fused_operators: dict[str, int]


@dataclass
class QuantizedGraph:
    """Stage 5 (`quantize_graph`): the quantized graph and its agreement with the fp32 one."""

    path: Path
    agreement: Any | None


def plan_generation(request: GenerationRequest, steps: Steps) -> GenerationPlan:
    """Open the checkpoint and its tokenizer, resolve the defaults, choose the graph and the parity cases."""
    hf = check_rules(request.rules, request.mode, request.hf_options)
    mode = request.mode
    with steps.step("load checkpoint"):
        loaded: LoadedDecoder = load_decoder(request.model_dir)
        tokenizer = loaded.architecture.load_tokenizer(loaded.checkpoint.path)
        prompts = request.prompts or BUILTIN_PROMPTS
        check_tokenizer(tokenizer, prompts, loaded.dims.vocab_size, loaded.checkpoint.path)
    defaults = resolve_lengths(request.defaults or GenerationDefaults(), tokenizer, prompts,
                               loaded.dims.max_positions)
    # transformers' rules: sampling with num_beams > 1 is beam sampling (generate(do_sample=True, num_beams=n)).
    if mode is not SearchMode.BEAM and not (hf and mode is SearchMode.SAMPLING):
        defaults = replace(defaults, num_beams=1, num_return_sequences=1)
    ngram = request.no_repeat_ngram_size
    check_flags(defaults.flags(ngram), prompt_len=1, max_positions=loaded.dims.max_positions)
    request.sampling.validate(mode, request.cases)
    hf_spec = replace(hf, temperature=request.temperature, top_p=request.top_p).spec(
        mode, loaded.dims, ngram, defaults.num_beams) if hf else None
    cases = request.cases
    if cases is None and request.parity and hf_spec is not None and not hf_spec.mode.sampling:
        cases = hf_matrix(prompts, tokenizer, defaults.flags(ngram), hf_spec.mode, loaded.dims.max_positions,
                          min_new_tokens=hf_spec.min_new_tokens, max_new_tokens=hf_spec.max_new_tokens)
    elif cases is None and request.parity and mode is not SearchMode.SAMPLING:
        cases = default_matrix(prompts, tokenizer, defaults, mode, loaded.dims.max_positions, ngram)
    notes = [n for n in [length_penalty_note(defaults, mode)] if n and hf_spec is None] + list(
        request.extra_notes or [])
    sampling = asdict(request.sampling) if mode is SearchMode.SAMPLING else {}
    ort_spec = SearchGraphSpec.for_model(mode, loaded.dims, no_repeat_ngram_size=ngram, **sampling)
    graph = SearchGraphPlan(mode, loaded.checkpoint.path, ort_spec, hf_spec)
    return GenerationPlan(loaded, tokenizer, prompts, defaults, graph, cases, notes)


def prepare_decoder(loaded: LoadedDecoder, scratch: Path, steps: Steps, *, opset: int = DEFAULT_OPSET,
                    atol: float = DEFAULT_ATOL, optimize: bool = False) -> PreparedDecoder:
    """Export the decoder (torch.onnx), validate it against PyTorch, and optionally optimize and revalidate it."""
    decoder_path = scratch / DECODER_FILE
    with steps.step("export decoder (torch.onnx, TorchScript)"):
        export_decoder_onnx(loaded, decoder_path, opset)
    with steps.step("validate decoder against PyTorch"):
        validation = validate_decoder(loaded, decoder_path, atol)
        require_passed(validation)
    fused_ops: dict[str, int] = {}
    if optimize:
        # The optimized decoder replaces the exported one everywhere below, so the parity matrix (and the
        # agreement of a quantized graph) is measured on exactly what ships.
        optimized = scratch / f"optimized_{DECODER_FILE}"
        with steps.step("optimize decoder (onnxruntime transformer optimizer, gpt2)"):
            fused_ops = optimize_decoder(decoder_path, optimized, loaded.dims)
        with steps.step("validate optimized decoder against PyTorch"):
            validation = validate_decoder(loaded, optimized, atol)
            require_passed(validation)
        decoder_path = optimized
    return PreparedDecoder(decoder_path, validation, fused_ops)


def build_graph(graph: SearchGraphPlan, decoder: Path, target: Path, steps: Steps) -> Path:
    """The generation graph around `decoder`, written to `target`."""
    with steps.step(graph.step_name):
        return graph.build(decoder, target)


def verify_graph(plan: GenerationPlan, graph_path: Path, decoder: Path, scratch: Path, steps: Steps,
                 ) -> ParityReport | SamplingReport | HfParityReport | HfSamplingReport | None:
    """Token parity with `generate` (beam, greedy), or the statistical checks of a sampling graph; raises
    `ParityError` on a failure. None when there is nothing to check (no cases)."""
    loaded, tokenizer, hf_spec, defaults = plan.loaded, plan.tokenizer, plan.graph.hf_spec, plan.defaults
    cases, mode = plan.cases, plan.graph.mode
    if hf_spec is not None and cases:
        with steps.step(f"parity: {len(cases)} cases vs model.generate (transformers rules)"):
            report = run_hf_parity([as_hf_case(c) for c in cases], make_session(graph_path), loaded.model,
                                   tokenizer, hf_spec, loaded.dims.max_positions)
        if not report.passed:
            bad = report.mismatches[0]
            raise ParityError(
                f"{len(report.mismatches)} parity case(s) differ from model.generate "
                f"(first: '{bad.case.name}': graph {bad.graph} vs generate {bad.generate})",
                "report this as a genexport bug with the checkpoint; nothing was written",
            )
        return report
    if hf_spec is not None and hf_spec.mode.sampling:
        settings = SamplingSettings(
            temperature=hf_spec.temperature, top_k=hf_spec.top_k, top_p=hf_spec.top_p,
            num_beams=defaults.num_beams, num_return_sequences=defaults.num_return_sequences,
            repetition_penalty=defaults.repetition_penalty, min_new_tokens=hf_spec.min_new_tokens)
        with steps.step(f"{hf_spec.mode.value} checks: seeds, top-k/top-p support, distribution vs PyTorch"):
            sampled = run_hf_sampling_checks(make_session(graph_path), loaded.model, tokenizer, hf_spec,
                                             plan.prompts, settings)
        _require_sampling(sampled)
        return sampled
    if mode is SearchMode.SAMPLING:
        # The same decoder fused with a vanishing top_p: greedy by construction, compared to generate.
        twin_path = scratch / "sampling_greedy_twin.onnx"
        ort_spec = plan.graph.ort_spec
        with steps.step("sampling checks: fuse the top_p -> 0 twin"):
            build_search_graph(loaded.checkpoint.path, decoder, twin_path, replace(ort_spec, top_p=GREEDY_TOP_P))
        with steps.step("sampling checks: seeds, nucleus, distribution vs PyTorch"):
            sampled = run_sampling_checks(
                make_session(graph_path), make_session(twin_path), loaded.model, tokenizer, plan.prompts,
                temperature=ort_spec.temperature, top_p=ort_spec.top_p, pad=loaded.dims.pad_token_id,
                eos=loaded.dims.eos_token_id, max_positions=loaded.dims.max_positions,
                no_repeat_ngram_size=ort_spec.no_repeat_ngram_size,
            )
        _require_sampling(sampled)
        return sampled
    if cases:
        with steps.step(f"parity: {len(cases)} cases vs model.generate"):
            parity = run_parity(cases, make_session(graph_path), loaded.model, tokenizer, loaded.dims.pad_token_id,
                                loaded.dims.eos_token_id, loaded.dims.max_positions)
        if not parity.passed:
            bad = parity.mismatches[0]
            raise ParityError(
                f"{len(parity.mismatches)} parity case(s) differ from model.generate without explanation "
                f"(first: '{bad.case.name}': graph {bad.graph} vs generate {bad.generate})",
                "report this as a genexport bug with the checkpoint; nothing was written",
            )
        return parity
    return None


def _require_sampling(report: SamplingReport | HfSamplingReport) -> None:
    if not report.passed:
        bad = report.failures[0]
        raise ParityError(
            f"sampling check '{bad.name}' failed ({bad.value:g}, expected {bad.bound}; {bad.detail})",
            "report this as a genexport bug with the checkpoint; nothing was written",
        )


def quantize_graph(plan: GenerationPlan, decoder: Path, precision: Precision, target: Path, fp32_graph: Path,
                   scratch: Path, steps: Steps) -> QuantizedGraph:
    """Quantize the decoder, build the graph around it at `target`, and measure it against the fp32 graph on the
    parity cases (a quantized graph cannot match generate token for token)."""
    quantized = scratch / f"decoder.{precision.value}.onnx"
    with steps.step(f"quantize decoder ({precision.value}) and fuse"):
        quantize_decoder(decoder, quantized, precision)
        plan.graph.build(quantized, target)
    agreement = None
    if plan.cases:
        with steps.step(f"agreement of {precision.value} with fp32 on {len(plan.cases)} cases"):
            agreement = measure_agreement(plan.cases, make_session(target), make_session(fp32_graph),
                                          plan.tokenizer, plan.loaded.dims.pad_token_id,
                                          plan.loaded.dims.eos_token_id, precision)
    return QuantizedGraph(target, agreement)


def write_generation_output(request: GenerationRequest, plan: GenerationPlan, staging: Path, graph_path: Path,
                            decoder: PreparedDecoder, report: Any | None, agreement: Any | None) -> Path:
    """Tokenizer files and the manifest beside the graph in `staging`; returns the manifest's path."""
    loaded, precision = plan.loaded, Precision(request.precision)
    copy_tokenizer_files(loaded.checkpoint.path, staging / TOKENIZER_DIR, extra=("generation_config.json",))
    return Manifest(
        command=plan.graph.mode.value,
        source=loaded.checkpoint.describe(),
        graph={graph_path.name: graph_io(graph_path)},
        settings=GenerationSettings(
            opset=request.opset,
            atol=request.atol,
            dims=asdict(loaded.dims),
            rules=request.rules,
            search=plan.graph.baked(),
            graph_inputs=plan.graph.fed_inputs(),
            defaulted_inputs=plan.graph.defaulted_inputs(),
            generation_defaults=RecordedDefaults(**asdict(plan.defaults)),
            defaults_source=request.defaults_source or {},
            precision=precision.value,
            # quantize_decoder's default: the vocabulary projection stays fp32 (beam ranking agreement).
            quantized_matmuls="none" if precision is Precision.FP32 else "all but the logits projection",
            optimize=OptimizeRecord(enabled=request.optimize, fused_operators=decoder.fused_operators),
            # Logits for the last prompt position only on the first step (patches/ort_init_decoder.py).
            init_decoder=has_init_decoder(graph_path),
            notes=plan.notes,
        ),
        validation={"decoder": decoder.validation.as_dict()},
        # A quantized graph cannot match generate token for token: its agreement with the fp32 graph
        # (which did pass token parity) is recorded beside that parity report.
        parity=(report.as_dict() if report else {}) | (
            {"agreement_with_fp32": agreement.as_dict()} if agreement else {}) or None,
    ).write(staging)


def export_generation(model_dir: Path, output: Path, *, steps: Steps | None = None,
                      **settings: Any) -> GenerationExportResult:
    """Export `model_dir` as one generation graph in `output`; raises on any failed check.

    `settings` are `GenerationRequest`'s fields (mode, defaults, no_repeat_ngram_size, temperature, top_p, parity,
    prompts, cases, force, opset, atol, precision, optimize, rules, hf_options, defaults_source, extra_notes).
    `rules="transformers"` builds the search from standard ONNX operators with `generate`'s own rules
    (gen_export.search.hf_search) instead of fusing onnxruntime's operator; `hf_options` holds what only that
    family has.

    Arguments are checked first (types, finite numbers, ranges), then `output` is checked and locked for the
    whole run (artifacts.reserved_outputs), then the checkpoint is opened.
    """
    request = GenerationRequest(model_dir, output, **settings).validate()
    with reserved_outputs([request.output], request.force, model_dirs=(request.model_dir,)):
        return run_generation(request, steps or Steps())


def run_generation(request: GenerationRequest, steps: Steps) -> GenerationExportResult:
    """The stages, composed: plan -> prepare the decoder -> build the graph -> verify -> quantize -> write.

    `request` is validated and its output locked (`export_generation` does both).
    """
    check_rules(request.rules, request.mode, request.hf_options)  # first, as every export has always done
    output = Path(request.output)
    check_output_target(output, request.force)
    precision = Precision(request.precision)
    check_precision(precision, sampling=request.mode is SearchMode.SAMPLING)
    plan = plan_generation(request, steps)
    graph_name = graph_file(request.mode)
    with staged_output(output, request.force) as staging, tempfile.TemporaryDirectory(prefix="genexport-") as tmp:
        scratch = Path(tmp)
        decoder = prepare_decoder(plan.loaded, scratch, steps, opset=request.opset, atol=request.atol,
                                  optimize=request.optimize)
        if request.optimize:
            plan.notes.append(f"optimize: fused {decoder.fused_operators or 'nothing'}")
        # The fp32 graph is always built and checked; a quantized graph is measured against it below.
        graph_path = staging / graph_name
        fp32_path = graph_path if precision is Precision.FP32 else scratch / f"fp32_{graph_name}"
        build_graph(plan.graph, decoder.path, fp32_path, steps)
        report = verify_graph(plan, fp32_path, decoder.path, scratch, steps) if request.parity else None
        agreement = None
        if precision is not Precision.FP32:
            agreement = quantize_graph(plan, decoder.path, precision, graph_path, fp32_path, scratch,
                                       steps).agreement
            if agreement is not None:
                plan.notes.append(f"{precision.value}: {agreement.identical_sequences}/{agreement.sequences} "
                                  f"sequences and {agreement.token_agreement:.1%} of tokens identical to the fp32 "
                                  "graph (which itself passed token parity with generate)")
        write_generation_output(request, plan, staging, graph_path, decoder, report, agreement)
    output = output.resolve()
    return GenerationExportResult(output, output / graph_name, output / "genexport.json", request.mode,
                                  decoder.validation, report, plan.notes, steps.timings)
