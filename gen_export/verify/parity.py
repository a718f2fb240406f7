"""Token parity between a fused generation graph, `model.generate` and an onnxruntime-rules reference.

Three sequences are compared per case, as a user receives them (the generated tokens after the
padded prompt, cut at the first EOS or pad):

* the graph's output;
* `model.generate(do_sample=False, ...)` with the same flags;
* `reference_search`, a small PyTorch search that follows onnxruntime's kernel rules.

Where the two rule sets coincide (greedy, or beam search with length_penalty 0) the graph must equal
`generate`. Elsewhere (length_penalty != 0: onnxruntime divides a hypothesis' log-probability by
(prompt + generated length)^lp, transformers by the generated length (EOS counted)^lp) a difference is
*explained* when the graph equals the reference. Anything else is a mismatch and fails the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from rich.console import Group
from rich.table import Table
from rich.text import Text
from transformers import GenerationConfig, PreTrainedModel

from gen_export.contract import CallSettings
from gen_export.errors import GenExportError
from gen_export.tables import compact_table
from gen_export.verify.reference_search import (
    SearchFlags,
    next_logits_from_model,
    ort_beam_search,
    ort_greedy_search,
)

Tokens = list[list[list[int]]]  # batch x returned sequence x generated tokens

#: The parity table's columns: abbreviated so that the whole table fits an 80-column terminal.
COLUMNS = ("case", "batch", "beams", "ret", "lp", "min", "rep", "new", "verdict")
#: Longer case names are cut with an ellipsis (the matrix's own names are shorter).
CASE_NAME_WIDTH = 20


class Verdict(StrEnum):
    MATCH = "match"
    EXPLAINED_LENGTH_PENALTY = "differs: length normalisation (explained)"
    MISMATCH = "MISMATCH"


#: How the table shows a verdict (the manifest keeps the full value).
VERDICT_LABELS = {Verdict.MATCH: "match", Verdict.EXPLAINED_LENGTH_PENALTY: "explained",
                  Verdict.MISMATCH: "MISMATCH"}


@dataclass(frozen=True)
class ParityCase:
    """One row of the parity table: a batch of prompts and the flags for both implementations."""

    name: str
    prompts: tuple[str, ...]
    flags: SearchFlags

    def rules_coincide(self) -> bool:
        """True where onnxruntime's and transformers' rules give the same ranking by construction."""
        return self.flags.num_beams == 1 or self.flags.length_penalty == 0.0


@dataclass
class CaseResult:
    case: ParityCase
    graph: Tokens
    generate: Tokens
    reference: Tokens
    verdict: Verdict
    prompt_tokens: int
    #: Per prompt, the first returned sequence decoded (special tokens skipped), as a user reads it.
    graph_texts: list[str] = field(default_factory=list)
    generate_texts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.case.name,
            "prompts": list(self.case.prompts),
            "flags": asdict(self.case.flags),
            "rules_coincide": self.case.rules_coincide(),
            "verdict": self.verdict.value,
            "graph_equals_generate": self.graph == self.generate,
            "graph_equals_reference": self.graph == self.reference,
            "graph": self.graph,
            "generate": self.generate,
            "graph_texts": self.graph_texts,
            "generate_texts": self.generate_texts,
        }


@dataclass
class ParityReport:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def mismatches(self) -> list[CaseResult]:
        return [r for r in self.results if r.verdict is Verdict.MISMATCH]

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.mismatches

    def counts(self) -> dict[str, int]:
        return {v.value: sum(r.verdict is v for r in self.results) for v in Verdict}

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "counts": self.counts(), "cases": [r.as_dict() for r in self.results]}

    def table(self) -> Table:
        """One line per case, within 80 columns: the flags sit in columns, so case names stay short."""
        table = compact_table("Token parity: fused graph vs model.generate", *COLUMNS,
                              right=("batch", "beams", "ret", "lp", "min", "rep"),
                              max_widths={"case": CASE_NAME_WIDTH})
        for r in self.results:
            f = r.case.flags
            lengths = sorted({len(seq) for row in r.graph for seq in row})
            colour = {"match": "green", "MISMATCH": "bold red"}.get(r.verdict.value, "yellow")
            label = VERDICT_LABELS[r.verdict]
            table.add_row(
                r.case.name, str(len(r.case.prompts)), str(f.num_beams), str(f.num_return_sequences),
                f"{f.length_penalty:g}", str(f.min_length), f"{f.repetition_penalty:g}",
                ",".join(map(str, lengths)), f"[{colour}]{label}[/{colour}]",
            )
        return table

    def legend(self) -> str:
        """What the table's abbreviations mean (the explained verdict only where it occurs)."""
        legend = ("ret: returned sequences, lp: length_penalty, min: min_length (prompt included), "
                  "rep: repetition_penalty, new: tokens generated")
        if any(r.verdict is Verdict.EXPLAINED_LENGTH_PENALTY for r in self.results):
            legend += (f"; {VERDICT_LABELS[Verdict.EXPLAINED_LENGTH_PENALTY]}: {Verdict.EXPLAINED_LENGTH_PENALTY}, "
                       "the graph equals the onnxruntime-rules reference")
        return legend

    def samples(self, limit: int = 3) -> Group:
        """Prompt -> decoded text from the graph and from generate, for the first `limit` prompts of the matrix."""
        lines: list[Text] = [Text("Generated text, graph vs generate (first sequence, cut at EOS):", style="bold")]
        shown = 0
        for r in self.results:
            for prompt, graph, generate in zip(r.case.prompts, r.graph_texts, r.generate_texts, strict=False):
                if shown == limit:
                    break
                shown += 1
                same = "[green]same[/green]" if graph == generate else "[bold red]differs[/bold red]"
                lines.append(Text.assemble(f"  {r.case.name}: ", (repr(prompt), "cyan")))
                lines.append(Text.assemble("    graph    -> ", repr(graph)))
                lines.append(Text.assemble("    generate -> ", repr(generate), "  ", Text.from_markup(same)))
        return Group(*lines)


def user_tokens(sequences: np.ndarray, prompt_len: int, stop_ids: set[int]) -> Tokens:
    """[batch, nrs, max_len] -> generated tokens after the padded prompt, cut at the first EOS/pad."""
    result: Tokens = []
    for row in sequences:
        seqs = []
        for seq in row:
            generated = []
            for token in seq[prompt_len:].tolist():
                if token in stop_ids:
                    break
                generated.append(int(token))
            seqs.append(generated)
        result.append(seqs)
    return result


def graph_feed(ids: np.ndarray, mask: np.ndarray, flags: SearchFlags | CallSettings, input_names: list[str],
               seed: int | None = None) -> dict[str, np.ndarray]:
    """Inputs for a generation graph (`contract.CallSettings.feed`); only those the graph declares are fed."""
    settings = flags if isinstance(flags, CallSettings) else CallSettings.from_flags(flags, seed)
    if seed is not None and settings.seed != seed:
        settings = replace(settings, seed=seed)
    return settings.feed(ids, mask, input_names)


def generate_config(flags: SearchFlags, pad: int, eos: int, bos: int | None = None) -> GenerationConfig:
    """A fresh config, so a checkpoint's generation_config.json cannot add flags the graph lacks."""
    return GenerationConfig(
        do_sample=False,
        num_beams=flags.num_beams,
        num_return_sequences=flags.num_return_sequences,
        max_length=flags.max_length,
        min_length=flags.min_length,
        length_penalty=flags.length_penalty,
        repetition_penalty=flags.repetition_penalty,
        no_repeat_ngram_size=flags.no_repeat_ngram_size,
        early_stopping=flags.early_stopping,
        pad_token_id=pad,
        eos_token_id=eos,
        # The graph has no BOS notion; naming the model's own keeps transformers from "fixing" the config.
        bos_token_id=bos,
        use_cache=True,
    )


def check_flags(flags: SearchFlags, prompt_len: int, max_positions: int) -> None:
    """The operator's runtime limits (`contract.CallSettings.check`), and early_stopping, which it cannot honour."""
    CallSettings.from_flags(flags).check(prompt_len, max_positions)
    if flags.early_stopping:
        raise GenExportError(
            "early_stopping=True is not supported: onnxruntime's BeamSearch stops when the finished set fills "
            "without comparing running beams, so results can differ from transformers",
            "use early_stopping=False (the operator's behaviour then matches transformers' False)",
        )


def run_case(
    case: ParityCase,
    session: Any,
    model: PreTrainedModel,
    tokenizer: Any,
    pad: int,
    eos: int,
    max_positions: int,
) -> CaseResult:
    encoded = tokenizer(list(case.prompts), return_tensors="pt", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    prompt_len = ids.shape[1]
    check_flags(case.flags, prompt_len, max_positions)
    stop = {eos, pad}

    input_names = [i.name for i in session.get_inputs()]
    graph_out = session.run(["sequences"], graph_feed(ids.numpy(), mask.numpy(), case.flags, input_names))[0]
    if graph_out.ndim == 2:  # greedy / sampling graphs return [batch, max_length]
        graph_out = graph_out[:, None, :]
    graph_tokens = user_tokens(graph_out, prompt_len, stop)

    with torch.no_grad():
        config = generate_config(case.flags, pad, eos, model.config.bos_token_id)
        generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    generated = generated.reshape(len(case.prompts), case.flags.num_return_sequences, -1).numpy()
    generate_tokens = user_tokens(generated, prompt_len, stop)

    # A BeamSearch graph (it has a num_beams input) keeps beam rules at num_beams=1: penalties on
    # log-probabilities, hypotheses and its done check. Only a GreedySearch/Sampling graph is greedy.
    search = ort_beam_search if "num_beams" in input_names else ort_greedy_search
    reference = search(next_logits_from_model(model), ids, mask, case.flags, eos_token_id=eos, pad_token_id=pad)
    reference_tokens = user_tokens(reference.sequences.numpy(), prompt_len, stop)

    if graph_tokens == generate_tokens:
        verdict = Verdict.MATCH
    elif graph_tokens == reference_tokens and not case.rules_coincide():
        verdict = Verdict.EXPLAINED_LENGTH_PENALTY
    else:
        verdict = Verdict.MISMATCH

    def first_texts(tokens: Tokens) -> list[str]:
        return [tokenizer.decode(row[0], skip_special_tokens=True) for row in tokens]

    return CaseResult(case, graph_tokens, generate_tokens, reference_tokens, verdict, prompt_len,
                      first_texts(graph_tokens), first_texts(generate_tokens))


def run_parity(
    cases: list[ParityCase],
    session: Any,
    model: PreTrainedModel,
    tokenizer: Any,
    pad: int,
    eos: int,
    max_positions: int,
) -> ParityReport:
    tokenizer.padding_side = "left"
    report = ParityReport()
    for case in cases:
        report.results.append(run_case(case, session, model, tokenizer, pad, eos, max_positions))
    return report
