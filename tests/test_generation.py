"""`genexport beam`: one fused graph, token parity with `model.generate` across a flag matrix."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest
from fixtures_decoders import WrongMinLengthSession

from gen_export.generation import export_generation
from gen_export.runtime import make_session
from gen_export.verify.parity import ParityCase, Verdict, run_case, run_parity
from gen_export.verify.reference_search import SearchFlags


@pytest.fixture(scope="module", params=[False, True], ids=["exported", "optimized"])
def beam_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """The plain exported decoder, and the optimized one (fused Attention, SkipLayerNorm, BiasGelu)."""
    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("beam") / "out", parity=False,
                             optimize=request.param)


@pytest.fixture(scope="module")
def harness(beam_export, tiny_biogpt: Path) -> dict[str, Any]:
    from gen_export.export.decoder import load_decoder

    loaded = load_decoder(tiny_biogpt)
    tokenizer = loaded.architecture.load_tokenizer(tiny_biogpt)
    tokenizer.padding_side = "left"
    return {
        "session": make_session(beam_export.graph_onnx),
        "model": loaded.model,
        "tokenizer": tokenizer,
        "dims": loaded.dims,
    }


def _prompt_len(tokenizer: Any, prompts: tuple[str, ...]) -> int:
    return int(tokenizer(list(prompts), return_tensors="pt", padding=True)["input_ids"].shape[1])


def _matrix(tokenizer: Any) -> list[ParityCase]:
    from gen_export.demo import DEMO_PROMPTS

    singles = [(p,) for p in DEMO_PROMPTS[:4]]
    batch3 = (DEMO_PROMPTS[0], DEMO_PROMPTS[3], DEMO_PROMPTS[5])  # different lengths: left padding
    batches = [*singles, batch3]
    cases = []
    beam_settings = [(2, 1), (2, 2), (4, 1), (4, 3), (5, 2), (5, 3)]
    for index, ((beams, nrs), lp) in enumerate(itertools.product(beam_settings, [0.0, 0.6, 1.0, 2.0])):
        prompts = batches[index % len(batches)]
        plen = _prompt_len(tokenizer, prompts)
        flags = SearchFlags(max_length=plen + 20, num_beams=beams, num_return_sequences=nrs, length_penalty=lp)
        if index % 3 == 1:
            flags = replace(flags, min_length=plen + 6)
        if index % 4 == 2:
            flags = replace(flags, repetition_penalty=1.3)
        cases.append(ParityCase(f"b{beams} r{nrs} lp{lp:g} #{index}", prompts, flags))
    for prompts in batches:  # greedy through the beam op (num_beams=1)
        plen = _prompt_len(tokenizer, prompts)
        cases.append(ParityCase("greedy", prompts, SearchFlags(max_length=plen + 20, num_beams=1)))
    return cases


def test_beam_graph_is_one_file_with_contract_io(beam_export) -> None:
    files = sorted(p.name for p in beam_export.output.iterdir())
    assert files == ["beam_search.onnx", "genexport.json", "tokenizer"]
    model = onnx.load(str(beam_export.graph_onnx))
    assert [n.op_type for n in model.graph.node] == ["BeamSearch"]
    assert model.graph.node[0].domain == "com.microsoft"
    assert [i.name for i in model.graph.input] == [
        "input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
        "repetition_penalty", "attention_mask",
    ]
    assert [o.name for o in model.graph.output] == ["sequences", "sequences_scores"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    assert attrs["pad_token_id"] == 1 and attrs["eos_token_id"] == 2  # BioGPT: pad != eos


def test_parity_matrix(harness: dict[str, Any]) -> None:
    cases = _matrix(harness["tokenizer"])
    dims = harness["dims"]
    report = run_parity(cases, harness["session"], harness["model"], harness["tokenizer"], dims.pad_token_id,
                        dims.eos_token_id, dims.max_positions)
    assert report.passed, [r.as_dict() for r in report.mismatches]
    for result in report.results:
        # The onnxruntime-rules reference reproduces the graph on every case...
        assert result.graph == result.reference, result.case.name
        # ...and where the rule sets coincide, the graph equals generate exactly.
        if result.case.rules_coincide():
            assert result.verdict is Verdict.MATCH, result.case.name
    # The matrix must exercise early EOS, or it proves nothing about where implementations part.
    ended_early = sum(
        1 for r in report.results for row in r.graph for seq in row
        if len(seq) < r.case.flags.max_length - r.prompt_tokens
    )
    assert ended_early >= 10
    # ...and where length normalisation parts them (seen: 2 of 29 cases), explained, never hidden.
    assert report.counts()[Verdict.EXPLAINED_LENGTH_PENALTY.value] >= 1
    assert len(report.results) == 29


def test_parity_check_fails_on_mismatched_flag(harness: dict[str, Any]) -> None:
    from gen_export.demo import DEMO_PROMPTS

    dims = harness["dims"]
    verdicts = []
    for prompt in DEMO_PROMPTS[:4]:
        plen = _prompt_len(harness["tokenizer"], (prompt,))
        case = ParityCase("mismatched", (prompt,), SearchFlags(max_length=plen + 20, num_beams=4,
                                                                length_penalty=0.0))
        result = run_case(case, WrongMinLengthSession(harness["session"]), harness["model"], harness["tokenizer"],
                          dims.pad_token_id, dims.eos_token_id, dims.max_positions)
        verdicts.append(result.verdict)
    assert verdicts == [Verdict.MISMATCH] * 4


def test_unseen_checkpoint_exports_with_default_matrix(wide_biogpt: Path, tmp_path: Path) -> None:
    """Another size, vocabulary and tokenizer than the fixtures above: the default matrix must pass."""
    result = export_generation(wide_biogpt, tmp_path / "wide")
    assert result.parity is not None and result.parity.passed
    manifest = json.loads(result.manifest.read_text())
    assert manifest["parity"]["passed"] is True
    assert manifest["settings"]["search"]["vocab_size"] == json.loads((wide_biogpt / "config.json").read_text())[
        "vocab_size"]
    assert manifest["settings"]["generation_defaults"]["num_beams"] == 4
