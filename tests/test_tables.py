"""Every table genexport prints fits an 80-column terminal: one line per row, no cell split across lines."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from gen_export.cli import decoder_table, embedding_table, timings_table
from gen_export.generation import BUILTIN_PROMPTS, GenerationDefaults, default_matrix
from gen_export.search.search_graph import SearchMode
from gen_export.verify.parity import CaseResult, ParityReport, Verdict
from gen_export.verify.sampling_checks import SamplingCheck, SamplingReport

WIDTH = 80


def _render(renderable: object) -> list[str]:
    console = Console(width=WIDTH, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def assert_fits(table: Table) -> None:
    """Each line within WIDTH, one line per row (no wrapped continuation), every cell's text whole on its row."""
    lines = _render(table)
    assert all(len(line) <= WIDTH for line in lines), "\n".join(lines)
    cells = [[re.sub(r"\[/?[a-z ]+\]", "", str(c)) for c in column._cells] for column in table.columns]
    rows = list(zip(*cells, strict=True))
    title_lines = 1 if table.title else 0
    # title, header, rule, rows: a wrapped cell would add lines.
    assert len(lines) == title_lines + 2 + len(rows), "\n".join(lines)
    for row, line in zip(rows, lines[title_lines + 2:], strict=True):
        for cell in row:
            assert cell in line, f"cell {cell!r} is not whole on its line {line!r}"


def _report(checkpoint: Path, mode: SearchMode) -> ParityReport:
    """The default matrix's real case names and flags, with the widest token counts and every verdict."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    cases = default_matrix(BUILTIN_PROMPTS, tokenizer, GenerationDefaults(max_length=64, min_length=12), mode, 128)
    verdicts = list(Verdict)
    results = []
    for i, case in enumerate(cases):
        tokens = [[[7] * 24 for _ in range(case.flags.num_return_sequences)] for _ in case.prompts]
        results.append(CaseResult(case, tokens, tokens, tokens, verdicts[i % len(verdicts)], 9))
    return ParityReport(results)


@pytest.mark.parametrize("mode", [SearchMode.BEAM, SearchMode.GREEDY])
def test_parity_table_fits_80_columns(tiny_biogpt: Path, mode: SearchMode) -> None:
    report = _report(tiny_biogpt, mode)
    assert_fits(report.table())
    assert any(r.verdict is Verdict.EXPLAINED_LENGTH_PENALTY for r in report.results)


def test_timings_table_fits_80_columns() -> None:
    steps = ["load checkpoint", "export decoder (torch.onnx, TorchScript)", "validate decoder against PyTorch",
             "optimize decoder (onnxruntime transformer optimizer, gpt2)",
             "validate optimized decoder against PyTorch", "fuse sampling search operator (convert_generation)",
             "sampling checks: seeds, nucleus, distribution vs PyTorch", "parity: 12 cases vs model.generate",
             "quantize decoder (int4) and fuse", "agreement of int4 with fp32 on 12 cases",
             "export encoder with pooling (torch.onnx, TorchScript)", "parity vs PyTorch (and sentence-transformers)"]
    assert_fits(timings_table({step: 12345.678 for step in steps}))


def test_decoder_table_fits_80_columns() -> None:
    names = ["first step, empty past (batch 2, 6 tokens)", "one-token step with past (past 6)",
             "left-padded batch (lengths 7, 4, 2)"]
    cases = [SimpleNamespace(name=n, logits_max_abs=1.234e-05, present_max_abs=2.5e-06, logits_tolerance=1.2e-04,
                             present_tolerance=1.1e-04, passed=i != 1) for i, n in enumerate(names)]
    assert_fits(decoder_table(cases))


def test_embedding_table_fits_80_columns() -> None:
    figure = SimpleNamespace(cosine_min=0.99999994, cosine_mean=1.0, max_abs=1.45e-07)
    result = SimpleNamespace(
        pooling="per-token", normalize=False,
        parity=[SimpleNamespace(reference="PyTorch", **vars(figure)),
                SimpleNamespace(reference="sentence-transformers encode", **vars(figure))],
        variants=[SimpleNamespace(file="embedding.optimized.onnx", cosine_min=0.99999, cosine_mean=1.0),
                  SimpleNamespace(file="embedding.int8.onnx", cosine_min=0.99389, cosine_mean=0.99557)])
    assert_fits(embedding_table(result))


def test_sampling_checks_fit_80_columns() -> None:
    """Sampling checks are listed, not tabulated (their details are sentences): each verdict line stays whole."""
    report = SamplingReport(temperature=0.7, top_p=0.95, seed=0, draws=2000, checks=[
        SamplingCheck("top_p 1e-06 twin == generate(do_sample=False)", True, 3, "= 3 cases",
                      "left-padded batch of 3; min_length; repetition penalty 1.3"),
        SamplingCheck("single-step distribution (total variation)", False, 0.02113, "< 0.05 (and chi-square p > 0.001)",
                      "2000 draws of 'the patient was treated with': nucleus 5 tokens, 6 bins, chi2 3.21 (df 5), "
                      "p 0.667")])
    lines = _render(report.table())
    assert all(len(line) <= WIDTH for line in lines), "\n".join(lines)
    for check in report.checks:
        assert any(f"{check.name}: {check.value:.4g}" in line for line in lines), "\n".join(lines)
    assert any(line.startswith(" NO  single-step distribution") for line in lines)


def test_the_check_catches_a_table_that_wraps() -> None:
    """The parity table as it was before the compact layout: its long case names wrap at 80 columns."""
    table = Table(title="Token parity: fused graph vs model.generate (and onnxruntime-rules reference)")
    for column in ("case", "batch", "beams", "nrs", "len_pen", "min_len", "rep_pen", "new tokens", "verdict"):
        table.add_column(column)
    table.add_row("beams 4, 3 returned, min length", "2", "4", "3", "0", "12", "1", "6", "match")
    with pytest.raises(AssertionError):
        assert_fits(table)
