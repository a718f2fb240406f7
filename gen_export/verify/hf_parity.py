"""Parity for transformers-rules graphs: identical to `model.generate` or MISMATCH, nothing in between.

Each case runs the graph and `model.generate(..., output_scores=True, return_dict_in_generate=True)` with the same
flags and compares what `generate` returns, whole: the sequences array (padded prompt, generated tokens, EOS
kept, pad after it, same length) and, for beam search, `sequences_scores` within `SCORE_ATOL`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from rich.table import Table
from transformers import GenerationConfig, PreTrainedModel

from gen_export.search.hf_search import HfMode, HfSearchSpec
from gen_export.verify.parity import ParityCase, Verdict, check_flags, graph_feed
from gen_export.verify.reference_search import SearchFlags

SCORE_ATOL = 1e-4


@dataclass(frozen=True)
class HfCase(ParityCase):
    """A parity case with transformers' extra length controls (0: unset)."""

    min_new_tokens: int = 0
    max_new_tokens: int = 0


@dataclass
class HfCaseResult:
    case: HfCase
    graph: list[list[list[int]]]
    generate: list[list[list[int]]]
    score_max_abs: float | None
    verdict: Verdict
    prompt_tokens: int
    eos_token_ids: tuple[int, ...]

    def generated_lengths(self) -> list[int]:
        """Tokens generate produced per returned sequence, EOS included (pad after it not counted)."""
        lengths = []
        for row in self.generate:
            for seq in row:
                tail = seq[self.prompt_tokens:]
                ends = [i for i, t in enumerate(tail) if t in self.eos_token_ids]
                lengths.append(ends[0] + 1 if ends else len(tail))
        return lengths

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.case.name, "prompts": list(self.case.prompts), "flags": asdict(self.case.flags),
                "min_new_tokens": self.case.min_new_tokens, "max_new_tokens": self.case.max_new_tokens,
                "verdict": self.verdict.value, "score_max_abs": self.score_max_abs,
                "generated_lengths": self.generated_lengths(),
                "graph": self.graph, "generate": self.generate}


@dataclass
class HfParityReport:
    spec: dict[str, Any]
    results: list[HfCaseResult] = field(default_factory=list)

    @property
    def mismatches(self) -> list[HfCaseResult]:
        return [r for r in self.results if r.verdict is Verdict.MISMATCH]

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.mismatches

    def counts(self) -> dict[str, int]:
        return {v.value: sum(r.verdict is v for r in self.results) for v in (Verdict.MATCH, Verdict.MISMATCH)}

    def as_dict(self) -> dict[str, Any]:
        return {"rules": "transformers", "passed": self.passed, "counts": self.counts(), "spec": self.spec,
                "score_atol": SCORE_ATOL, "cases": [r.as_dict() for r in self.results]}

    def table(self) -> Table:
        table = Table(title="Parity (transformers rules): graph vs model.generate, whole sequences and scores")
        for column in ("case", "batch", "beams", "nrs", "lp", "min", "rep", "new tokens", "|Δscore|", "verdict"):
            table.add_column(column, overflow="fold")
        for r in self.results:
            f = r.case.flags
            lengths = sorted(set(r.generated_lengths()))
            colour = "green" if r.verdict is Verdict.MATCH else "bold red"
            minimum = f"+{r.case.min_new_tokens}" if r.case.min_new_tokens else str(f.min_length)
            table.add_row(r.case.name, str(len(r.case.prompts)), str(f.num_beams), str(f.num_return_sequences),
                          f"{f.length_penalty:g}", minimum, f"{f.repetition_penalty:g}", ",".join(map(str, lengths)),
                          "" if r.score_max_abs is None else f"{r.score_max_abs:.1e}",
                          f"[{colour}]{r.verdict.value}[/{colour}]")
        return table


def as_hf_case(case: ParityCase) -> HfCase:
    return case if isinstance(case, HfCase) else HfCase(case.name, case.prompts, case.flags)


def hf_generate_config(case: HfCase, spec: HfSearchSpec, bos: int | None) -> GenerationConfig:
    """A fresh config with exactly the graph's flags (a checkpoint's generation_config.json adds nothing)."""
    f = case.flags
    beam = spec.mode is HfMode.BEAM
    lengths: dict[str, int] = {"max_new_tokens": case.max_new_tokens} if case.max_new_tokens else {
        "max_length": f.max_length}
    if case.min_new_tokens:
        lengths["min_new_tokens"] = case.min_new_tokens
    eos: int | list[int] = spec.eos_token_ids[0] if len(spec.eos_token_ids) == 1 else list(spec.eos_token_ids)
    return GenerationConfig(
        do_sample=False, num_beams=f.num_beams if beam else 1,
        num_return_sequences=f.num_return_sequences if beam else 1, min_length=f.min_length,
        length_penalty=f.length_penalty, repetition_penalty=f.repetition_penalty,
        no_repeat_ngram_size=spec.no_repeat_ngram_size,
        early_stopping=spec.early_stopping.as_generate(), pad_token_id=spec.pad_token_id, eos_token_id=eos,
        bos_token_id=bos, use_cache=True, output_scores=True, return_dict_in_generate=True, **lengths,
    )


def hf_feed(case: HfCase, ids: np.ndarray, mask: np.ndarray, input_names: list[str]) -> dict[str, np.ndarray]:
    feed = graph_feed(ids, mask, case.flags, [n for n in input_names if n not in ("max_new_tokens",
                                                                                   "min_new_tokens")])
    # Always fed (they have default initializers, so they are not among the session's required inputs).
    feed["max_new_tokens"] = np.array([case.max_new_tokens], np.int32)
    feed["min_new_tokens"] = np.array([case.min_new_tokens], np.int32)
    return feed


def _rows(sequences: np.ndarray, batch: int, nrs: int) -> list[list[list[int]]]:
    return sequences.reshape(batch, nrs, -1).tolist()


def run_hf_case(case: HfCase, session: Any, model: PreTrainedModel, tokenizer: Any, spec: HfSearchSpec,
                max_positions: int) -> HfCaseResult:
    tokenizer.padding_side = "left"
    encoded = tokenizer(list(case.prompts), return_tensors="pt", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    batch, prompt_len = ids.shape
    check_flags(case.flags, prompt_len, max_positions)
    nrs = case.flags.num_return_sequences if spec.mode is HfMode.BEAM else 1
    input_names = [i.name for i in session.get_inputs()]
    outputs = session.run(None, hf_feed(case, ids.numpy(), mask.numpy(), input_names))
    graph_seq = outputs[0]
    with torch.no_grad():
        generated = model.generate(input_ids=ids, attention_mask=mask,
                                   generation_config=hf_generate_config(case, spec, model.config.bos_token_id))
    expected = generated.sequences.numpy()
    same = graph_seq.size == expected.size and graph_seq.shape[-1] == expected.shape[-1] and bool(
        (graph_seq.reshape(expected.shape) == expected).all())
    score_diff = None
    if spec.mode is HfMode.BEAM:
        expected_scores = generated.sequences_scores.numpy().reshape(batch, nrs)
        score_diff = float(np.abs(outputs[1] - expected_scores).max())
        same = same and score_diff <= SCORE_ATOL
    verdict = Verdict.MATCH if same else Verdict.MISMATCH
    return HfCaseResult(case, _rows(graph_seq, batch, nrs), _rows(expected, batch, nrs), score_diff, verdict,
                        prompt_len, spec.eos_token_ids)


def run_hf_parity(cases: list[HfCase], session: Any, model: PreTrainedModel, tokenizer: Any, spec: HfSearchSpec,
                  max_positions: int) -> HfParityReport:
    report = HfParityReport(spec.as_dict())
    for case in cases:
        report.results.append(run_hf_case(case, session, model, tokenizer, spec, max_positions))
    return report


def hf_matrix(prompts: tuple[str, ...], tokenizer: Any, base: SearchFlags, mode: HfMode, max_positions: int,
              new_tokens: int = 24, min_new_tokens: int = 0, max_new_tokens: int = 0) -> list[HfCase]:
    """The cases where onnxruntime's rules and transformers' part, around the user's defaults.

    Lengths are long enough for beams to finish at different lengths (the demo models end sentences with EOS);
    each case is capped at the model's positions. `min_new_tokens` / `max_new_tokens` are the graph's defaults
    (0: unset), used by every case that does not set its own.
    """
    tokenizer.padding_side = "left"
    singles = prompts[:3]
    batch = tuple(prompts[:3]) if len(prompts) >= 3 else tuple(prompts)

    def case(name: str, chosen: tuple[str, ...], min_new: int = min_new_tokens, max_new: int = max_new_tokens,
             new: int = new_tokens, **changes: Any) -> HfCase:
        prompt_len = tokenizer(list(chosen), return_tensors="pt", padding=True)["input_ids"].shape[1]
        max_length = min(base.max_length, prompt_len + new, max_positions)
        flags = replace(base, max_length=max_length, **changes)
        if max_new:
            max_new = min(max_new, max_positions - prompt_len)
        check_flags(replace(flags, max_length=prompt_len + max_new) if max_new else flags, prompt_len,
                    max_positions)
        return HfCase(name, chosen, flags, min_new_tokens=min_new, max_new_tokens=max_new)

    cases = [case(f"prompt {i + 1}", (p,)) for i, p in enumerate(singles)]
    cases.append(case("left-padded batch", batch))
    if mode is HfMode.BEAM:
        cases += [
            case("lp 0.6, 2 returned", batch, num_beams=4, num_return_sequences=2, length_penalty=0.6),
            case("lp 1.0, 3 returned", batch, num_beams=4, num_return_sequences=3, length_penalty=1.0),
            case("lp 2.0, beams 5", batch, num_beams=5, num_return_sequences=1, length_penalty=2.0),
            case("min_new_tokens 8, 2 returned", batch[:2], num_beams=4, num_return_sequences=2, min_new=8),
            case("repetition penalty 1.3, lp 0.6", (prompts[-1],), num_beams=4, num_return_sequences=2,
                 length_penalty=0.6, repetition_penalty=1.3),
            case("max_new_tokens 5, beams 2", batch, num_beams=2, num_return_sequences=1, max_new=5),
        ]
    else:
        cases += [
            case("min_new_tokens 8", (prompts[0],), min_new=8),
            case("repetition penalty 1.3", batch, repetition_penalty=1.3),
            case("max_new_tokens 5", batch, max_new=5),
        ]
    return cases
