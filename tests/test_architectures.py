"""GPT-2 and OPT through the registry, and greedy-graph token parity for every decoder architecture.

Each architecture is one small module; these tests prove the rest of genexport (decoder export and
validation, the fused BeamSearch/GreedySearch graphs, the parity harness, the manifest) handles them
with no architecture-specific code. Greedy parity must be exact: onnxruntime's GreedySearch and
`generate(do_sample=False, num_beams=1)` follow the same rules.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fixtures_decoders import WrongMinLengthSession, cached_checkpoint

from gen_export.demo import DEMO_PROMPTS
from gen_export.export.architectures import get_architecture, supported
from gen_export.export.decoder import export_decoder, load_decoder
from gen_export.generation import GenerationExportResult, export_generation
from gen_export.runtime import make_session
from gen_export.search.search_graph import SearchMode
from gen_export.verify.parity import ParityCase, ParityReport, Verdict, run_case, run_parity
from gen_export.verify.reference_search import SearchFlags

ARCHITECTURES = ("biogpt", "gpt2", "opt")


@pytest.fixture(scope="module")
def checkpoints(demo_cache: Path) -> dict[str, Path]:
    from gen_export.demo import cached_checkpoint as cached_biogpt

    return {"biogpt": cached_biogpt("tiny"), "gpt2": cached_checkpoint("gpt2"),
            "opt": cached_checkpoint("opt")}


@pytest.fixture(scope="module")
def greedy_exports(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                   ) -> dict[str, GenerationExportResult]:
    out = tmp_path_factory.mktemp("greedy")
    return {name: export_generation(path, out / name, mode=SearchMode.GREEDY, parity=False)
            for name, path in checkpoints.items()}


def _prompt_len(tokenizer: Any, prompts: tuple[str, ...]) -> int:
    return int(tokenizer(list(prompts), return_tensors="pt", padding=True)["input_ids"].shape[1])


def greedy_matrix(tokenizer: Any) -> list[ParityCase]:
    """Beam-test-style matrix for num_beams=1: singles, left-padded batches, min_length, penalties."""
    tokenizer.padding_side = "left"
    batch_a = (DEMO_PROMPTS[0], DEMO_PROMPTS[3], DEMO_PROMPTS[5])  # three lengths: left padding
    batch_b = (DEMO_PROMPTS[1], DEMO_PROMPTS[2], DEMO_PROMPTS[7])
    cases = []

    def add(name: str, prompts: tuple[str, ...], new: int = 20, min_new: int | None = None,
            repetition_penalty: float = 1.0) -> None:
        plen = _prompt_len(tokenizer, prompts)
        flags = SearchFlags(max_length=plen + new, num_beams=1, repetition_penalty=repetition_penalty)
        if min_new is not None:
            flags = replace(flags, min_length=plen + min_new)
        cases.append(ParityCase(name, prompts, flags))

    for i, prompt in enumerate(DEMO_PROMPTS):
        add(f"prompt {i + 1}", (prompt,))
    add("left-padded batch of 3", batch_a)
    add("left-padded batch of 3 (b)", batch_b)
    add("batch, min length +8", batch_a, min_new=8)
    add("batch, repetition penalty 1.3", batch_a, repetition_penalty=1.3)
    add("batch b, min length +6, repetition penalty 1.3", batch_b, min_new=6, repetition_penalty=1.3)
    add("single, min length +12, repetition penalty 1.3", (DEMO_PROMPTS[4],), min_new=12,
        repetition_penalty=1.3)
    add("batch, cut by max_length (+3)", batch_a, new=3)
    return cases


def _harness(export: GenerationExportResult, checkpoint: Path) -> dict[str, Any]:
    loaded = load_decoder(checkpoint)
    tokenizer = loaded.architecture.load_tokenizer(checkpoint)
    return {"session": make_session(export.graph_onnx), "model": loaded.model, "tokenizer": tokenizer,
            "dims": loaded.dims}


def _run(h: dict[str, Any], cases: list[ParityCase]) -> ParityReport:
    d = h["dims"]
    return run_parity(cases, h["session"], h["model"], h["tokenizer"], d.pad_token_id, d.eos_token_id,
                      d.max_positions)


def test_registry_lists_gpt2_and_opt() -> None:
    decoders = supported("decoder")
    assert {"BioGptForCausalLM", "GPT2LMHeadModel", "OPTForCausalLM"} <= set(decoders)
    assert type(get_architecture("GPT2LMHeadModel", "decoder")).__module__ == "gen_export.export.architectures.gpt2"
    assert type(get_architecture("OPTForCausalLM", "decoder")).__module__ == "gen_export.export.architectures.opt"


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_fixture_tokenizer_is_gpt2_fast_and_model_is_peaked(kind: str, checkpoints: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoints[kind]
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(path)
    # transformers 5.x renamed the tokenizers-backed class GPT2TokenizerFast to GPT2Tokenizer.
    assert tokenizer.is_fast and type(tokenizer).__name__ in ("GPT2TokenizerFast", "GPT2Tokenizer")
    ids = tokenizer(DEMO_PROMPTS[0])["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == DEMO_PROMPTS[0]
    if kind == "opt":
        # `</s>` (= eos) opens every text; pad is its own token.
        assert ids[0] == tokenizer.eos_token_id == 2 and tokenizer.pad_token_id == 1
    else:
        assert tokenizer.pad_token is None and tokenizer.eos_token_id == 0  # GPT-2: no pad token
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    lines = [line for line in Path(__file__).parents[1].joinpath("gen_export/data/corpus.txt").read_text()
             .splitlines()[:64] if line.strip()]
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    batch = tokenizer(lines, return_tensors="pt", padding=True)
    with torch.no_grad():
        top = model(**batch).logits.softmax(-1).max(-1).values
    # Trained, not random: the mean top-1 probability of a random 600-token model is ~0.002.
    assert float(top[batch["attention_mask"].bool()].mean()) > 0.5


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_decoder_export_validates(kind: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    result = export_decoder(checkpoints[kind], tmp_path / kind)
    assert result.validation.passed and result.validation.ort_gpt2_subgraph
    assert len(result.validation.cases) == 3
    assert max(c.logits_max_abs for c in result.validation.cases) < 1e-4
    manifest = json.loads(result.manifest.read_text())
    expected = {"gpt2": "GPT2LMHeadModel", "opt": "OPTForCausalLM"}[kind]
    assert manifest["source"]["architecture"] == expected


def test_pad_and_eos_in_the_fused_graphs(greedy_exports: dict[str, GenerationExportResult]) -> None:
    def ids(result: GenerationExportResult) -> tuple[int, int]:
        node = onnx.load(str(result.graph_onnx)).graph.node[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.op_type == "GreedySearch"
        return attrs["pad_token_id"], attrs["eos_token_id"]

    assert ids(greedy_exports["gpt2"]) == (0, 0)  # no pad token: pad = eos = <|endoftext|>
    assert ids(greedy_exports["opt"]) == (1, 2)
    assert ids(greedy_exports["biogpt"]) == (1, 2)
    for result in greedy_exports.values():
        assert sorted(p.name for p in result.output.iterdir()) == ["genexport.json", "greedy_search.onnx",
                                                                   "tokenizer"]


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_greedy_parity_matrix(kind: str, greedy_exports: dict[str, GenerationExportResult],
                              checkpoints: dict[str, Path]) -> None:
    h = _harness(greedy_exports[kind], checkpoints[kind])
    cases = greedy_matrix(h["tokenizer"])
    report = _run(h, cases)
    counts = report.counts()
    assert counts[Verdict.MATCH.value] == len(cases) == 15, [r.as_dict() for r in report.mismatches]
    by_name = {r.case.name: r for r in report.results}
    for result in report.results:
        assert result.graph == result.generate == result.reference, result.case.name
    # Early EOS: most rows stop well before max_length, so the cut at EOS/pad is exercised...
    rows = [(seq, r) for r in report.results for row in r.graph for seq in row]
    early = sum(len(seq) < r.case.flags.max_length - r.prompt_tokens for seq, r in rows)
    assert early >= 12, early
    # ...min_length really holds EOS back (rows grow), and max_length really cuts (+3 cases are 3 long).
    plain, held = by_name["left-padded batch of 3"], by_name["batch, min length +8"]
    assert all(len(h_seq[0]) >= 8 for h_seq in held.graph)
    assert sum(len(r[0]) for r in held.graph) > sum(len(r[0]) for r in plain.graph)
    assert all(len(row[0]) <= 3 for row in by_name["batch, cut by max_length (+3)"].graph)


def test_greedy_gpt2_output_after_eos_is_pad_then_stale(greedy_exports: dict[str, GenerationExportResult],
                                                        checkpoints: dict[str, Path]) -> None:
    """The op writes pad (= eos for GPT-2) for EOS and leaves stale ids after it: cut at the first one."""
    h = _harness(greedy_exports["gpt2"], checkpoints["gpt2"])
    tokenizer = h["tokenizer"]
    encoded = tokenizer([DEMO_PROMPTS[0]], return_tensors="np")
    plen = encoded["input_ids"].shape[1]
    feed = {"input_ids": encoded["input_ids"].astype(np.int32),
            "attention_mask": encoded["attention_mask"].astype(np.int32),
            "max_length": np.array([plen + 20], np.int32), "min_length": np.array([0], np.int32),
            "repetition_penalty": np.array([1.0], np.float32)}
    sequences = h["session"].run(["sequences"], feed)[0][0, plen:].tolist()
    assert 0 in sequences, sequences  # the model ends the sentence within 20 tokens
    generated = sequences[: sequences.index(0)]
    import torch

    with torch.no_grad():
        expected = h["model"].generate(input_ids=torch.tensor(encoded["input_ids"]), max_length=plen + 20,
                                       attention_mask=torch.tensor(encoded["attention_mask"]),
                                       do_sample=False, pad_token_id=0)[0, plen:].tolist()
    assert expected[: len(generated) + 1] == [*generated, 0]




@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_greedy_parity_can_fail(kind: str, greedy_exports: dict[str, GenerationExportResult],
                                checkpoints: dict[str, Path]) -> None:
    h = _harness(greedy_exports[kind], checkpoints[kind])
    d = h["dims"]
    mismatches = 0
    for prompt in DEMO_PROMPTS[:4]:
        plen = _prompt_len(h["tokenizer"], (prompt,))
        case = ParityCase("mismatched", (prompt,), SearchFlags(max_length=plen + 20, num_beams=1))
        result = run_case(case, WrongMinLengthSession(h["session"]), h["model"], h["tokenizer"],
                          d.pad_token_id, d.eos_token_id, d.max_positions)
        # The graph's min_length only changes rows that generate ends before 10 new tokens: exactly those
        # must be reported as mismatches, the others still match.
        ends_early = len(result.generate[0][0]) < 10
        assert result.verdict is (Verdict.MISMATCH if ends_early else Verdict.MATCH), result.as_dict()
        mismatches += ends_early
    assert mismatches >= 2


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_beam_export_default_matrix(kind: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """`genexport beam`'s own default matrix passes on the new architectures, with the user's prompts."""
    result = export_generation(checkpoints[kind], tmp_path / kind, prompts=DEMO_PROMPTS)
    assert result.parity is not None and result.parity.passed
    for r in result.parity.results:
        assert r.graph == r.reference, r.case.name  # onnxruntime's rules reproduced on every case
        if r.case.rules_coincide():
            assert r.verdict is Verdict.MATCH, r.case.name
    manifest = json.loads(result.manifest.read_text())
    assert manifest["parity"]["passed"] is True
    assert manifest["settings"]["dims"]["vocab_size"] == json.loads(
        (checkpoints[kind] / "config.json").read_text())["vocab_size"]


@pytest.mark.parametrize(("kind", "fuses_attention"), [("opt", True), ("gpt2", False)])
def test_optimized_beam_export_keeps_parity(kind: str, fuses_attention: bool, checkpoints: dict[str, Path],
                                            tmp_path: Path) -> None:
    """--optimize: OPT's q/k/v Linear attention fuses (pre-scaled query); GPT-2's Conv1D + Split
    export matches neither genexport's pattern nor onnxruntime's FusionGptAttention, and stays unfused."""
    result = export_generation(checkpoints[kind], tmp_path / kind, prompts=DEMO_PROMPTS, optimize=True)
    assert result.parity is not None and result.parity.passed
    for r in result.parity.results:
        assert r.graph == r.reference, r.case.name
        if r.case.rules_coincide():
            assert r.verdict is Verdict.MATCH, r.case.name
    fused = json.loads(result.manifest.read_text())["settings"]["optimize"]["fused_operators"]
    layers = json.loads((checkpoints[kind] / "config.json").read_text())
    layers = layers.get("num_hidden_layers", layers.get("n_layer"))
    assert fused.get("MultiHeadAttention", 0) == (layers if fuses_attention else 0), fused
