"""Transformers-rules generation graphs (`--rules transformers`): identical to `model.generate`, standard ONNX.

One decoder per architecture is exported once per module; the graphs around it take milliseconds to build, so
each early_stopping value gets its own. The matrix holds the cases where onnxruntime's rules part from
transformers' (length_penalty 0.6 / 1.0 / 2.0 with beams finishing at different lengths, early EOS, every
early_stopping value, 1-3 returned sequences, min_new_tokens, max_new_tokens, repetition penalty, left-padded
batches of 3), and the same code runs for BioGPT, GPT-2 and OPT.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from fixtures_decoders import WrongMinLengthSession, cached_checkpoint

from gen_export.demo import DEMO_PROMPTS
from gen_export.export.decoder import export_decoder_onnx, load_decoder
from gen_export.generation import export_generation
from gen_export.runtime import make_session
from gen_export.search.hf_search import (
    EarlyStopping,
    HfMode,
    HfOptions,
    HfSearchSpec,
    build_hf_search_graph,
    search_node_domains,
)
from gen_export.search.search_graph import SearchMode
from gen_export.verify.hf_parity import HfCase, HfParityReport, hf_matrix, run_hf_parity
from gen_export.verify.hf_sampling import HfSamplingReport, SamplingSettings, run_hf_sampling_checks
from gen_export.verify.parity import Verdict
from gen_export.verify.reference_search import SearchFlags

ARCHITECTURES = ("biogpt", "gpt2", "opt")
BATCH_A = (DEMO_PROMPTS[0], DEMO_PROMPTS[3], DEMO_PROMPTS[5])  # three lengths: left padding
BATCH_B = (DEMO_PROMPTS[1], DEMO_PROMPTS[2], DEMO_PROMPTS[7])


@dataclass
class Harness:
    model: Any
    tokenizer: Any
    dims: Any
    decoder: Path
    folder: Path
    graphs: dict[tuple[Any, ...], tuple[Any, HfSearchSpec]]

    def graph(self, mode: HfMode, early_stopping: EarlyStopping = EarlyStopping.FALSE,
              eos: tuple[int, ...] | None = None, ngram: int = 0, **spec_fields: Any) -> tuple[Any, HfSearchSpec]:
        key = (mode, early_stopping, eos, ngram, tuple(sorted(spec_fields.items())))
        if key not in self.graphs:
            spec = HfSearchSpec(mode, eos or (self.dims.eos_token_id,), self.dims.pad_token_id, self.dims.vocab_size,
                                early_stopping=early_stopping, no_repeat_ngram_size=ngram, **spec_fields)
            path = self.folder / f"{mode.value}-{early_stopping.value}-{len(self.graphs)}.onnx"
            build_hf_search_graph(self.decoder, path, spec)
            self.graphs[key] = (make_session(path), spec)
        return self.graphs[key]

    def parity(self, cases: list[HfCase], mode: HfMode = HfMode.BEAM, **graph: Any) -> HfParityReport:
        session, spec = self.graph(mode, **graph)
        return run_hf_parity(cases, session, self.model, self.tokenizer, spec, self.dims.max_positions)


@pytest.fixture(scope="module")
def harnesses(demo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Harness]:
    from gen_export.demo import cached_checkpoint as cached_biogpt

    paths = {"biogpt": cached_biogpt("tiny"), "gpt2": cached_checkpoint("gpt2"), "opt": cached_checkpoint("opt")}
    result = {}
    for name, path in paths.items():
        loaded = load_decoder(path)
        folder = tmp_path_factory.mktemp(f"hf-{name}")
        decoder = export_decoder_onnx(loaded, folder / "decoder.onnx")
        tokenizer = loaded.architecture.load_tokenizer(path)
        tokenizer.padding_side = "left"
        result[name] = Harness(loaded.model, tokenizer, loaded.dims, decoder, folder, {})
    return result


def _case(h: Harness, name: str, prompts: tuple[str, ...], new: int = 24, **flags: Any) -> HfCase:
    min_new = flags.pop("min_new", 0)
    max_new = flags.pop("max_new", 0)
    plen = int(h.tokenizer(list(prompts), return_tensors="pt", padding=True)["input_ids"].shape[1])
    return HfCase(name, prompts, SearchFlags(max_length=min(plen + new, h.dims.max_positions), **flags),
                  min_new_tokens=min_new, max_new_tokens=max_new)


def _assert_identical(report: HfParityReport) -> None:
    bad = [(r.case.name, r.graph, r.generate, r.score_max_abs) for r in report.mismatches]
    assert not bad, bad
    assert all(r.verdict is Verdict.MATCH for r in report.results)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_beam_matrix_equals_generate(kind: str, harnesses: dict[str, Harness]) -> None:
    h = harnesses[kind]
    base = SearchFlags(max_length=h.dims.max_positions, num_beams=4)
    cases = hf_matrix(DEMO_PROMPTS, h.tokenizer, base, HfMode.BEAM, h.dims.max_positions)
    cases += [
        _case(h, "batch b, lp 1.0, nrs 3", BATCH_B, num_beams=4, num_return_sequences=3),
        _case(h, "batch a, lp 0.6, min_new 6, rep 1.3", BATCH_A, num_beams=3, num_return_sequences=3,
              length_penalty=0.6, min_new=6, repetition_penalty=1.3),
        _case(h, "batch a, lp 2.0, nrs 2, cut at +4", BATCH_A, new=4, num_beams=4, num_return_sequences=2,
              length_penalty=2.0),
    ]
    # min_length and min_new_tokens both set: generate lets min_new_tokens take precedence.
    plen = int(h.tokenizer(list(BATCH_B), return_tensors="pt", padding=True)["input_ids"].shape[1])
    cases.append(_case(h, "min_length +14 and min_new 2", BATCH_B, num_beams=2, min_length=plen + 14, min_new=2))
    report = h.parity(cases)
    _assert_identical(report)
    plens = [r.prompt_tokens for r in report.results]
    lengths = [set(r.generated_lengths()) for r in report.results]
    # The matrix exercises what it claims: returned beams of different lengths, and EOS before max_length.
    assert any(len(found) > 1 for found in lengths), lengths
    limits = [c.flags.max_length - p for c, p in zip(cases, plens, strict=True)]
    assert any(min(found) < limit for found, limit in zip(lengths, limits, strict=True)), lengths
    assert {c.flags.length_penalty for c in cases} >= {0.6, 1.0, 2.0}
    assert {c.flags.num_return_sequences for c in cases} == {1, 2, 3}


@pytest.mark.parametrize("early_stopping", [EarlyStopping.TRUE, EarlyStopping.NEVER])
@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_early_stopping_values(kind: str, early_stopping: EarlyStopping, harnesses: dict[str, Harness]) -> None:
    h = harnesses[kind]
    cases = [_case(h, f"lp {lp}", BATCH_A, new=16, num_beams=4, num_return_sequences=2, length_penalty=lp)
             for lp in (0.6, 1.0, 2.0)]
    cases.append(_case(h, "batch b, lp -0.5, nrs 3", BATCH_B, new=16, num_beams=3, num_return_sequences=3,
                       length_penalty=-0.5))
    _assert_identical(h.parity(cases, early_stopping=early_stopping))


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_greedy_matrix_equals_generate(kind: str, harnesses: dict[str, Harness]) -> None:
    h = harnesses[kind]
    base = SearchFlags(max_length=h.dims.max_positions)
    cases = hf_matrix(DEMO_PROMPTS, h.tokenizer, base, HfMode.GREEDY, h.dims.max_positions)
    cases.append(_case(h, "batch b, min_new 6, rep 1.3", BATCH_B, min_new=6, repetition_penalty=1.3))
    _assert_identical(h.parity(cases, HfMode.GREEDY))


def test_several_eos_ids_and_no_repeat_ngram(harnesses: dict[str, Harness]) -> None:
    """transformers 5 checkpoints often list several EOS ids: keep 3 * num_beams candidates, stop on any."""
    h = harnesses["biogpt"]
    # A second "EOS" the model emits often: the most frequent token generate produces after the first prompt.
    enc = h.tokenizer([DEMO_PROMPTS[0]], return_tensors="pt")
    generated = h.model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=h.dims.pad_token_id)
    tokens = [t for t in generated[0, enc["input_ids"].shape[1]:].tolist() if t != h.dims.eos_token_id]
    second = max(set(tokens), key=tokens.count)
    eos = (h.dims.eos_token_id, second)
    beam = [_case(h, "two eos, lp 1", BATCH_A, num_beams=4, num_return_sequences=2),
            _case(h, "two eos, lp 0.6, ngram", BATCH_B, num_beams=3, num_return_sequences=2, length_penalty=0.6)]
    _assert_identical(h.parity(beam, eos=eos, ngram=2))
    _assert_identical(h.parity([_case(h, "greedy two eos", BATCH_A)], HfMode.GREEDY, eos=eos, ngram=2))


def test_parity_fails_on_a_wrong_flag(harnesses: dict[str, Harness]) -> None:
    """A graph fed a min_length generate does not get is reported as MISMATCH, never as a match."""
    h = harnesses["biogpt"]
    session, spec = h.graph(HfMode.BEAM)
    cases = [_case(h, "lp 1", BATCH_A, num_beams=4, num_return_sequences=2)]
    report = run_hf_parity(cases, WrongMinLengthSession(session), h.model, h.tokenizer, spec, h.dims.max_positions)
    assert [r.verdict for r in report.results] == [Verdict.MISMATCH]
    assert not report.passed
    # And a graph built with another early_stopping than generate uses (lp 2 prefers long hypotheses: "never"
    # keeps searching where False stops) disagrees somewhere in the same matrix.
    wrong, _ = h.graph(HfMode.BEAM, early_stopping=EarlyStopping.NEVER)
    cases = [_case(h, f"lp {lp}", prompts, num_beams=4, num_return_sequences=2, length_penalty=lp)
             for lp in (1.0, 2.0) for prompts in (BATCH_A, BATCH_B)]
    report = run_hf_parity(cases, wrong, h.model, h.tokenizer, spec, h.dims.max_positions)
    assert report.mismatches


def test_search_logic_is_standard_onnx_and_weights_are_shared(harnesses: dict[str, Harness]) -> None:
    h = harnesses["gpt2"]
    h.graph(HfMode.BEAM)
    path = next(h.folder.glob("beam-false-*.onnx"))
    domains = search_node_domains(path)
    assert domains["search"] == {"ai.onnx"}, domains
    assert "Loop" in {n.op_type for n in onnx.load(str(path)).graph.node}
    decoder = onnx.load(str(h.decoder))
    graph = onnx.load(str(path))
    weights = {t.name for t in decoder.graph.initializer}
    # Every decoder weight is stored once, in the outer graph; the Loop body holds none.
    assert weights <= {t.name for t in graph.graph.initializer}
    loop = next(n for n in graph.graph.node if n.op_type == "Loop")
    assert not loop.attribute[0].g.initializer
    decoder_nodes = sum(1 for n in decoder.graph.node)
    body_decoder_nodes = sum(1 for n in loop.attribute[0].g.node if not n.name.startswith("body/"))
    assert body_decoder_nodes == decoder_nodes
    # The vocabulary projection sees only the last position (a Slice the generator inserted before it).
    producers = {o: n for n in loop.attribute[0].g.node for o in n.output}
    sliced = [n for n in loop.attribute[0].g.node if not n.name.startswith("body/") and n.input
              and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "Slice"
              and producers[n.input[0]].name.startswith("body/")]
    assert len(sliced) == 1 and sliced[0].op_type in ("MatMul", "Gemm"), sliced
    # New per-request inputs carry defaults, so today's feed keeps working.
    assert {"max_new_tokens", "min_new_tokens"} <= {t.name for t in graph.graph.initializer}


def test_export_generation_with_transformers_rules(tmp_path: Path, harnesses: dict[str, Harness]) -> None:
    """The library path: --rules transformers writes the graph, its parity report and the manifest fields."""
    from gen_export.demo import cached_checkpoint as cached_biogpt

    h = harnesses["biogpt"]
    cases = [_case(h, "batch, lp 2, max_new 9", BATCH_A, num_beams=4, num_return_sequences=2, length_penalty=2.0,
                   max_new=9),
             _case(h, "batch b, lp 0.6, min_new 5", BATCH_B, num_beams=3, length_penalty=0.6, min_new=5)]
    result = export_generation(
        cached_biogpt("tiny"), tmp_path / "o", rules="transformers",
        hf_options=HfOptions(early_stopping=EarlyStopping.NEVER, max_new_tokens=9), cases=cases,
    )
    assert isinstance(result.parity, HfParityReport) and result.parity.passed
    assert result.graph_onnx.name == "beam_search.onnx"
    manifest = json.loads(result.manifest.read_text())
    settings = manifest["settings"]
    assert settings["rules"] == "transformers"
    assert settings["search"]["early_stopping"] == "never"
    assert settings["search"]["max_new_tokens"] == 9
    # What clients and the Triton tokenizer feed stays today's interface; the new inputs keep their defaults.
    assert settings["graph_inputs"] == ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences",
                                        "length_penalty", "repetition_penalty", "attention_mask"]
    assert settings["defaulted_inputs"] == ["max_new_tokens", "min_new_tokens"]
    assert manifest["parity"]["counts"] == {"match": len(result.parity.results), "MISMATCH": 0}
    # Today's inputs alone still run (the new ones have defaults): max_new_tokens=9 applies.
    session = make_session(result.graph_onnx)
    ids = np.array([[5, 6, 7]], np.int32)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "max_length": np.array([40], np.int32),
            "min_length": np.array([0], np.int32), "num_beams": np.array([2], np.int32),
            "num_return_sequences": np.array([1], np.int32), "length_penalty": np.array([1.0], np.float32),
            "repetition_penalty": np.array([1.0], np.float32)}
    sequences, scores = session.run(None, feed)
    assert sequences.shape[:2] == (1, 1) and sequences.shape[2] <= 3 + 9 and scores.shape == (1, 1)


def test_rules_flags_are_refused_by_the_other_family(tmp_path: Path, harnesses: dict[str, Harness]) -> None:
    from gen_export.demo import cached_checkpoint as cached_biogpt
    from gen_export.errors import GenExportError

    with pytest.raises(GenExportError, match="--rules transformers"):
        export_generation(cached_biogpt("tiny"), tmp_path / "a", hf_options=HfOptions(min_new_tokens=3))
    with pytest.raises(GenExportError, match="--rules transformers"):
        export_generation(cached_biogpt("tiny"), tmp_path / "b", mode=SearchMode.SAMPLING,
                          hf_options=HfOptions(top_k=50))
    with pytest.raises(GenExportError, match="--search sampling"):
        export_generation(cached_biogpt("tiny"), tmp_path / "b", rules="transformers", hf_options=HfOptions(top_k=5))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(("kind", "mode", "settings"), [
    ("biogpt", HfMode.SAMPLE, SamplingSettings(temperature=1.3, top_k=5, top_p=0.9)),
    ("opt", HfMode.SAMPLE, SamplingSettings(temperature=0.8, top_k=8, top_p=0.95, repetition_penalty=1.2)),
    # The seed document's generate(do_sample=True, top_k=50, top_p=0.95, num_beams=5).
    ("biogpt", HfMode.BEAM_SAMPLE, SamplingSettings(top_k=50, top_p=0.95, num_beams=5, num_return_sequences=2)),
    ("gpt2", HfMode.BEAM_SAMPLE, SamplingSettings(temperature=1.5, top_k=20, top_p=0.9, num_beams=3)),
])
def test_sampling_checks_pass_and_fail_against_a_wrong_top_k(kind: str, mode: HfMode, settings: SamplingSettings,
                                                               harnesses: dict[str, Harness]) -> None:
    h = harnesses[kind]
    session, spec = h.graph(mode)
    report = run_hf_sampling_checks(session, h.model, h.tokenizer, spec, DEMO_PROMPTS, settings)
    assert report.passed, [(c.name, c.value, c.detail) for c in report.checks]
    names = {c.name for c in report.checks}
    assert {"same seed, same tokens", "every token inside PyTorch's top-k ∩ top-p"} <= names
    if mode is HfMode.SAMPLE:
        assert any(n.startswith("distribution") for n in names)
    wrong = run_hf_sampling_checks(session, h.model, h.tokenizer, spec, DEMO_PROMPTS, settings, check_top_k=1)
    failed = {c.name for c in wrong.failures}
    assert failed == {"every token inside PyTorch's top-k ∩ top-p"}, failed


def test_sampling_distribution_check_fails_for_a_wrong_temperature(harnesses: dict[str, Harness]) -> None:
    """The draws of a graph fed temperature 2.5 do not pass as PyTorch's temperature-0.7 distribution."""
    h = harnesses["biogpt"]
    session, spec = h.graph(HfMode.SAMPLE)

    class WrongTemperature:
        def get_inputs(self) -> Any:
            return session.get_inputs()

        def get_overridable_initializers(self) -> Any:
            return session.get_overridable_initializers()

        def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
            return session.run(names, dict(feed) | {"temperature": np.array([2.5], np.float32)})

    report = run_hf_sampling_checks(WrongTemperature(), h.model, h.tokenizer, spec, DEMO_PROMPTS,
                                    SamplingSettings(temperature=0.7))
    assert {c.name for c in report.failures} >= {"distribution: total variation vs PyTorch"}


def test_beam_sampling_export_of_the_seed_call(tmp_path: Path, harnesses: dict[str, Harness]) -> None:
    """`--rules transformers --search sampling --num-beams 5 --top-k 50 --top-p 0.95`: one graph, checks passed."""
    from gen_export.demo import cached_checkpoint as cached_biogpt
    from gen_export.generation import GenerationDefaults

    result = export_generation(cached_biogpt("tiny"), tmp_path / "o", mode=SearchMode.SAMPLING, rules="transformers",
                               defaults=GenerationDefaults(num_beams=5), top_p=0.95, hf_options=HfOptions(top_k=50))
    assert result.graph_onnx.name == "sampling.onnx"
    assert isinstance(result.parity, HfSamplingReport) and result.parity.passed
    manifest = json.loads(result.manifest.read_text())
    assert manifest["settings"]["search"]["mode"] == "beam_sampling"
    assert manifest["settings"]["search"]["top_k"] == 50
    assert "seed" in manifest["settings"]["graph_inputs"]
    assert {"top_k", "top_p", "temperature"} <= set(manifest["settings"]["defaulted_inputs"])
    assert search_node_domains(result.graph_onnx)["search"] == {"ai.onnx"}


def test_external_data_decoder_gives_an_external_data_graph(harnesses: dict[str, Harness], tmp_path: Path) -> None:
    """A decoder kept in external data (what > 2 GB decoders are) gives a graph with its weights beside it, once."""
    h = harnesses["opt"]
    folder = tmp_path / "ext"
    folder.mkdir()
    decoder = onnx.load(str(h.decoder))
    onnx.save_model(decoder, str(folder / "decoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="decoder.onnx.data", size_threshold=0)
    spec = HfSearchSpec(HfMode.BEAM, (h.dims.eos_token_id,), h.dims.pad_token_id, h.dims.vocab_size)
    graph = build_hf_search_graph(folder / "decoder.onnx", folder / "beam_search.onnx", spec)
    data = folder / "beam_search.onnx.data"
    # Tensors under 1 KB stay inline (size_threshold); the weights go to the data file.
    assert data.is_file() and data.stat().st_size > 0.9 * (folder / "decoder.onnx.data").stat().st_size
    assert graph.stat().st_size < data.stat().st_size
    cases = [_case(h, "batch, lp 0.6", BATCH_A, num_beams=3, num_return_sequences=2, length_penalty=0.6)]
    report = run_hf_parity(cases, make_session(graph), h.model, h.tokenizer, spec, h.dims.max_positions)
    _assert_identical(report)


def test_optimized_int8_graph_and_triton_repository(harnesses: dict[str, Harness], tmp_path: Path) -> None:
    """--optimize (com.microsoft attention inside the decoder only) and int8 compose; the Triton writer takes it."""
    from gen_export.demo import cached_checkpoint as cached_biogpt
    from gen_export.search.precision import Precision
    from gen_export.serve.triton import write_generator_repository

    h = harnesses["biogpt"]
    cases = [_case(h, "batch, lp 1, nrs 2", BATCH_A, num_beams=4, num_return_sequences=2)]
    result = export_generation(cached_biogpt("tiny"), tmp_path / "o", rules="transformers", optimize=True,
                               precision=Precision.INT8, cases=cases)
    assert isinstance(result.parity, HfParityReport) and result.parity.passed
    domains = search_node_domains(result.graph_onnx)
    assert domains["search"] == {"ai.onnx"} and "com.microsoft" in domains["decoder"]
    repo = write_generator_repository(result.output, tmp_path / "repo", backend="onnxruntime")
    model_file = repo.root / f"{repo.ensemble}_generator" / "1" / "model.onnx"
    model = onnx.load(str(model_file), load_external_data=False)
    assert model.ir_version <= 10  # what Triton 25.03's onnxruntime 1.20.1 loads
    ids = np.array([[5, 6, 7], [1, 8, 9]], np.int32)
    feed = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int32), "max_length": np.array([12], np.int32),
            "min_length": np.array([0], np.int32), "num_beams": np.array([2], np.int32),
            "num_return_sequences": np.array([2], np.int32), "length_penalty": np.array([1.0], np.float32),
            "repetition_penalty": np.array([1.0], np.float32)}
    sequences, scores = make_session(model_file).run(None, feed)
    assert sequences.shape[:2] == (2, 2) and scores.shape == (2, 2)
    if "GENEXPORT_OLD_ORT_PYTHON" in os.environ:  # the official container's onnxruntime (1.20.1) runs it too
        np.savez(tmp_path / "feed.npz", **feed)
        script = ("import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1]); "
                  "f = dict(np.load(sys.argv[2])); print(s.run(None, f)[0].ravel().tolist())")
        run = subprocess.run([os.environ["GENEXPORT_OLD_ORT_PYTHON"], "-c", script, str(model_file),
                              str(tmp_path / "feed.npz")], capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout) == sequences.ravel().tolist()


class _PaddingAwareRepetitionPenalty:
    """transformers 5's repetition penalty (left padding not penalised), for generate on transformers 4.57."""

    def __init__(self, penalty: float, padding: torch.Tensor) -> None:
        self.penalty, self.padding = penalty, padding

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        padding = self.padding.repeat_interleave(input_ids.shape[0] // self.padding.shape[0])
        positions = torch.arange(input_ids.shape[1])
        ids = input_ids.masked_fill(positions[None, :] < padding[:, None], vocab)
        wide = torch.nn.functional.pad(scores, (0, 1))
        picked = torch.gather(wide, 1, ids)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return wide.scatter(1, ids, picked)[:, :vocab]


@pytest.mark.parametrize("ignores_padding", [True, False])
def test_repetition_penalty_padding_rule_of_either_transformers_line(
        ignores_padding: bool, harnesses: dict[str, Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5 skips each row's left padding in the repetition penalty, 4.57 penalises it (GPT-2: pad = EOS,
    so it changes when sentences end). The graph follows the installed line; both rules are checked here by
    giving generate the other line's processor where needed."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
    from transformers.generation.utils import GenerationMixin

    from gen_export.search.hf_search import transformers_major

    h = harnesses["gpt2"]
    if ignores_padding != (transformers_major() >= 5):
        original = GenerationMixin._get_logits_processor

        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            processors = original(self, *args, **kwargs)
            mask = kwargs["model_kwargs"]["attention_mask"]
            padding = (mask != 0).int().argmax(dim=1) if ignores_padding else torch.zeros(len(mask), dtype=torch.int64)
            for i, p in enumerate(processors):
                if isinstance(p, RepetitionPenaltyLogitsProcessor):
                    processors[i] = _PaddingAwareRepetitionPenalty(p.penalty, padding)
            return processors

        monkeypatch.setattr(GenerationMixin, "_get_logits_processor", patched)
    beam = [_case(h, f"rep {r}, lp 1, batch {n}", batch, num_beams=3, num_return_sequences=2, repetition_penalty=r)
            for r in (1.3, 2.0) for n, batch in (("a", BATCH_A), ("b", BATCH_B))]
    _assert_identical(h.parity(beam, repetition_penalty_ignores_padding=ignores_padding))
    greedy = [_case(h, f"greedy rep {r}, batch {n}", batch, repetition_penalty=r)
              for r in (1.3, 2.0) for n, batch in (("a", BATCH_A), ("b", BATCH_B))]
    _assert_identical(h.parity(greedy, HfMode.GREEDY, repetition_penalty_ignores_padding=ignores_padding))
    # The cases can tell the two rules apart: the other rule's graph differs from generate somewhere.
    other = h.parity(beam, repetition_penalty_ignores_padding=not ignores_padding)
    other_greedy = h.parity(greedy, HfMode.GREEDY, repetition_penalty_ignores_padding=not ignores_padding)
    assert other.mismatches or other_greedy.mismatches
