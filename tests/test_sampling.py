"""The Sampling graph, tested for what can honestly be tested.

Its random stream (onnxruntime's own engine, seeded by the `seed` input) is not PyTorch's, so token
parity with `generate(do_sample=True)` cannot be claimed. Instead: a vanishing top_p is greedy (token
parity with `generate(do_sample=False)`), seeds make runs repeatable, no token outside the top-p nucleus
of PyTorch's probabilities ever appears, and the empirical next-token distribution matches
softmax(logits / temperature) restricted to the nucleus. Each check is also shown to fail when the
expectation is wrong, so a pass means something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from fixtures_decoders import cached_checkpoint
from test_architectures import greedy_matrix
from typer.testing import CliRunner

from gen_export.cli import app
from gen_export.demo import DEMO_PROMPTS
from gen_export.errors import GenExportError
from gen_export.export.decoder import load_decoder
from gen_export.generation import (
    GenerationDefaults,
    GenerationExportResult,
    default_matrix,
    export_generation,
)
from gen_export.runtime import make_session
from gen_export.search.search_graph import SearchMode
from gen_export.verify.parity import ParityCase, Verdict, run_parity, user_tokens
from gen_export.verify.reference_search import SearchFlags
from gen_export.verify.sampling_checks import (
    DEFAULT_TV_BOUND,
    GREEDY_TOP_P,
    SamplingReport,
    SeededSession,
    distribution_check,
)

TEMPERATURE, TOP_P = 0.8, 0.9
Exports = dict[str, GenerationExportResult]


@pytest.fixture(scope="module")
def checkpoints(demo_cache: Path) -> dict[str, Path]:
    from gen_export.demo import cached_checkpoint as cached_biogpt

    return {"biogpt": cached_biogpt("tiny"), "gpt2": cached_checkpoint("gpt2"),
            "opt": cached_checkpoint("opt")}


@pytest.fixture(scope="module")
def sampling_exports(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Exports:
    """One sampling export per architecture; export_generation runs the statistical checks itself."""
    out = tmp_path_factory.mktemp("sampling")
    return {name: export_generation(path, out / name, mode=SearchMode.SAMPLING, temperature=TEMPERATURE,
                                    top_p=TOP_P, prompts=DEMO_PROMPTS)
            for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def biogpt(checkpoints: dict[str, Path], sampling_exports: Exports) -> dict[str, Any]:
    loaded = load_decoder(checkpoints["biogpt"])
    tokenizer = loaded.architecture.load_tokenizer(checkpoints["biogpt"])
    return {"session": make_session(sampling_exports["biogpt"].graph_onnx), "model": loaded.model,
            "tokenizer": tokenizer, "dims": loaded.dims}


def _draw(session: Any, tokenizer: Any, prompts: list[str], seed: int, new: int) -> tuple[np.ndarray, int]:
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="np", padding=True)
    plen = enc["input_ids"].shape[1]
    feed = {
        "input_ids": enc["input_ids"].astype(np.int32),
        "attention_mask": enc["attention_mask"].astype(np.int32),
        "max_length": np.array([plen + new], np.int32), "min_length": np.array([0], np.int32),
        "repetition_penalty": np.array([1.0], np.float32), "seed": np.array([seed], np.int32),
    }
    return session.run(["sequences"], feed)[0], plen


@pytest.mark.parametrize("kind", ["biogpt", "gpt2", "opt"])
def test_export_runs_sampling_checks_not_token_parity(kind: str, sampling_exports: Exports) -> None:
    result = sampling_exports[kind]
    report = result.parity
    assert isinstance(report, SamplingReport) and report.passed
    assert sorted(p.name for p in result.output.iterdir()) == ["genexport.json", "sampling.onnx", "tokenizer"]
    node = onnx.load(str(result.graph_onnx)).graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == "Sampling"
    assert attrs["temperature"] == pytest.approx(TEMPERATURE) and attrs["top_p"] == pytest.approx(TOP_P)
    assert "top_k" not in attrs  # onnxruntime's Sampling op has no top_k
    manifest = json.loads(result.manifest.read_text())
    parity = manifest["parity"]
    assert parity["kind"].startswith("sampling statistics") and parity["passed"] is True
    assert "cases" not in parity  # no token-parity table is claimed
    assert manifest["settings"]["search"]["top_p"] == pytest.approx(TOP_P)
    dist = parity["distribution"]
    # The distribution check must be informative: several tokens in the nucleus, several bins.
    assert dist["nucleus_size"] >= 3 and len(dist["expected_frequency"]) >= 3
    assert dist["total_variation"] < DEFAULT_TV_BOUND and dist["outside_nucleus"] == 0
    checks = {c["name"]: c for c in parity["checks"]}
    assert checks["sampled tokens inside the top-p nucleus"]["value"] == 0
    assert checks["other seed, other tokens"]["value"] == 1.0  # seeds really changed the tokens
    assert parity["greedy_parity"]["passed"] is True


@pytest.mark.parametrize("kind", ["biogpt", "gpt2", "opt"])
def test_tiny_top_p_is_greedy_on_the_full_matrix(kind: str, checkpoints: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """top_p -> 0 keeps one token per step: token parity with generate(do_sample=False), 15 cases."""
    result = export_generation(checkpoints[kind], tmp_path / kind, mode=SearchMode.SAMPLING,
                               temperature=TEMPERATURE, top_p=GREEDY_TOP_P, parity=False)
    loaded = load_decoder(checkpoints[kind])
    tokenizer = loaded.architecture.load_tokenizer(checkpoints[kind])
    d = loaded.dims
    cases = greedy_matrix(tokenizer)
    session = SeededSession(make_session(result.graph_onnx), seed=7)  # feeds the graph's `seed` input
    report = run_parity(cases, session, loaded.model, tokenizer, d.pad_token_id, d.eos_token_id,
                        d.max_positions)
    assert [r.verdict for r in report.results] == [Verdict.MATCH] * len(cases) == [Verdict.MATCH] * 15


def test_same_seed_same_tokens_other_seed_other_tokens(biogpt: dict[str, Any],
                                                       sampling_exports: Exports) -> None:
    prompts = [DEMO_PROMPTS[0], DEMO_PROMPTS[5], DEMO_PROMPTS[1]] * 6
    stop = {biogpt["dims"].eos_token_id, biogpt["dims"].pad_token_id}

    def tokens(session: Any, seed: int) -> list[list[list[int]]]:
        out, plen = _draw(session, biogpt["tokenizer"], prompts, seed, 12)
        return user_tokens(out[:, None, :], plen, stop)  # after EOS the op leaves stale ids: compare cut rows

    fresh = make_session(sampling_exports["biogpt"].graph_onnx)  # a second session: no hidden state
    first = tokens(biogpt["session"], 11)
    assert first == tokens(biogpt["session"], 11) == tokens(fresh, 11)
    others = [tokens(biogpt["session"], seed) for seed in (12, 13, 1000)]
    for other in others:
        differing = sum(a != b for a, b in zip(first, other, strict=True))
        assert differing >= 3, differing
    # onnxruntime's engine (minstd_rand0) maps seed 0 to 1: "no seed" is seed 1, not a random seed.
    assert tokens(biogpt["session"], 0) == tokens(biogpt["session"], 1)


def _nucleus(probs: torch.Tensor, top_p: float) -> set[int]:
    """Independent restatement: most likely first, keep while the mass before a token is < top_p."""
    values, order = torch.sort(probs, descending=True)
    kept, before = set(), 0.0
    for value, token in zip(values.tolist(), order.tolist(), strict=True):
        if before >= top_p + 1e-4 and kept:  # 1e-4: float slack at the edge, as in sampling_checks
            break
        kept.add(token)
        before += value
    return kept


def test_no_token_outside_the_nucleus(biogpt: dict[str, Any]) -> None:
    """Every draw of 1000 single steps, for three prompts, lies in PyTorch's nucleus for that prefix."""
    tokenizer, model, dims = biogpt["tokenizer"], biogpt["model"], biogpt["dims"]
    nucleus_sizes = []
    for prompt in (DEMO_PROMPTS[0], DEMO_PROMPTS[1], DEMO_PROMPTS[6]):
        out, plen = _draw(biogpt["session"], tokenizer, [prompt] * 1000, seed=5, new=1)
        drawn = set(out[:, plen].tolist())
        with torch.no_grad():
            logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].double()
        probs = torch.softmax(logits / TEMPERATURE, -1)
        nucleus = _nucleus(probs, TOP_P)
        if dims.eos_token_id in nucleus:
            nucleus.add(dims.pad_token_id)  # the op writes pad for a sampled EOS
        assert drawn <= nucleus, (prompt, drawn - nucleus)
        nucleus_sizes.append(len(nucleus))
        # Outside the nucleus lies real probability mass that PyTorch's plain sampling would draw.
        assert float(probs[sorted(set(range(len(probs))) - nucleus)].sum()) > 0.01
    assert max(nucleus_sizes) >= 5


def test_distribution_check_detects_wrong_temperature_and_top_p(biogpt: dict[str, Any]) -> None:
    """The same draws judged against wrong expectations must fail: the check has power."""
    tokenizer, model, dims = biogpt["tokenizer"], biogpt["model"], biogpt["dims"]

    def check(temperature: float, top_p: float) -> dict[str, Any]:
        return distribution_check(biogpt["session"], model, tokenizer, DEMO_PROMPTS, temperature, top_p,
                                  draws=2000, seed=3, eos=dims.eos_token_id, pad=dims.pad_token_id)

    right = check(TEMPERATURE, TOP_P)
    assert right["total_variation"] < DEFAULT_TV_BOUND and right["p_value"] > 1e-4
    assert right["outside_nucleus"] == 0
    hotter = check(1.3, TOP_P)  # expectation flatter than what the graph samples
    assert hotter["total_variation"] > DEFAULT_TV_BOUND or hotter["p_value"] < 1e-4, hotter
    narrow = check(TEMPERATURE, 0.3)  # a nucleus smaller than the graph's
    assert narrow["outside_nucleus"] > 50, narrow


def test_draws_split_into_batches_keep_the_distribution(biogpt: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Large vocabularies split the draws (memory); spaced seeds keep the batches independent enough."""
    import gen_export.verify.sampling_checks as checks

    dims = biogpt["dims"]
    vocab = biogpt["model"].config.vocab_size
    monkeypatch.setattr(checks, "MAX_LOGIT_BYTES", 4 * vocab * 1500)  # 1500 / prompt length rows a batch
    split = distribution_check(biogpt["session"], biogpt["model"], biogpt["tokenizer"], DEMO_PROMPTS,
                               TEMPERATURE, TOP_P, draws=2000, seed=3, eos=dims.eos_token_id,
                               pad=dims.pad_token_id)
    assert split["draw_batches"] >= 5
    assert split["total_variation"] < DEFAULT_TV_BOUND and split["p_value"] > 1e-4
    assert split["outside_nucleus"] == 0


def test_default_matrix_refuses_sampling(biogpt: dict[str, Any]) -> None:
    defaults = GenerationDefaults(max_length=40)
    with pytest.raises(ValueError, match="no token-parity matrix"):
        default_matrix(DEMO_PROMPTS, biogpt["tokenizer"], defaults, SearchMode.SAMPLING, 128)


def test_sampling_settings_are_checked(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    case = ParityCase("x", (DEMO_PROMPTS[0],), SearchFlags(max_length=30))
    with pytest.raises(GenExportError, match="cannot be checked on a sampling graph"):
        export_generation(checkpoints["biogpt"], tmp_path / "a", mode=SearchMode.SAMPLING, cases=[case])
    with pytest.raises(GenExportError, match="only apply to sampling"):
        export_generation(checkpoints["biogpt"], tmp_path / "b", mode=SearchMode.GREEDY, top_p=0.9)
    with pytest.raises(GenExportError, match="must be in"):
        export_generation(checkpoints["biogpt"], tmp_path / "c", mode=SearchMode.SAMPLING, top_p=0.0)
    assert not any(tmp_path.iterdir())


def test_cli_search_sampling(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["beam", str(checkpoints["opt"]), "--output", str(tmp_path / "o"),
                                      "--search", "sampling", "--temperature", "0.7", "--top-p", "0.95"])
    assert result.exit_code == 0, result.output
    assert "no token parity is claimed" in " ".join(result.output.split())
    manifest = json.loads((tmp_path / "o" / "genexport.json").read_text())
    assert manifest["command"] == "sampling" and manifest["parity"]["passed"] is True
    assert manifest["settings"]["search"]["temperature"] == pytest.approx(0.7)
    assert manifest["settings"]["graph_inputs"][-1] == "seed"
