"""`genexport run` / `run_export`: an export folder used as a user would, checked against `model.generate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast, BioGptForCausalLM
from typer.testing import CliRunner

from gen_export.cli import app
from gen_export.embed import default_model_dir, export_embedding
from gen_export.errors import GenExportError
from gen_export.generation import BUILTIN_PROMPTS, export_generation
from gen_export.run import EmbeddingRun, GenerationRun, RunSettings, run_export
from gen_export.verify.parity import generate_config
from gen_export.verify.reference_search import SearchFlags

runner = CliRunner()
DEMO_PROMPT = "the patient was treated with"


@pytest.fixture(scope="module")
def demo_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `bash scripts/demo.sh` writes: the demo model with every default (no parity: test_generation's job)."""
    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("run") / "demo", parity=False).output


@pytest.fixture(scope="module")
def demo_model(tiny_biogpt: Path) -> tuple[Any, Any]:
    return BioGptForCausalLM.from_pretrained(tiny_biogpt).eval(), AutoTokenizer.from_pretrained(tiny_biogpt)


def _generate_texts(model_and_tokenizer: tuple[Any, Any], prompt: str, **flags: Any) -> list[str]:
    """`model.generate` with these flags, decoded after the prompt and cut at EOS, one text per sequence."""
    model, tokenizer = model_and_tokenizer
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    max_new = flags.pop("max_new_tokens", None)
    if max_new is not None:
        flags["max_length"] = ids.shape[1] + max_new
    config = generate_config(SearchFlags(**flags), pad=1, eos=2, bos=model.config.bos_token_id)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    texts = []
    for sequence in out[:, ids.shape[1]:].tolist():
        kept = sequence[:next((i for i, t in enumerate(sequence) if t in (1, 2)), len(sequence))]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


def test_cli_run_prints_the_text_generate_gives_for_the_demo_defaults(demo_export: Path, demo_model) -> None:
    """The issue's bar: `genexport run out/demo "the patient was treated with"` prints generate's text."""
    manifest = json.loads((demo_export / "genexport.json").read_text())
    defaults = manifest["settings"]["generation_defaults"]
    assert defaults["max_new_tokens"] is None and defaults["max_length"] == 64  # the demo's absolute default
    flags = {k: defaults[k] for k in ("max_length", "min_length", "num_beams", "num_return_sequences",
                                      "length_penalty", "repetition_penalty")}
    expected = _generate_texts(demo_model, DEMO_PROMPT, **flags)[0]
    assert expected  # the demo model says something: an empty text would prove nothing
    result = runner.invoke(app, ["run", str(demo_export), DEMO_PROMPT])
    assert result.exit_code == 0, result.output
    assert f"-> {expected}\n" in result.output
    assert "beam_search.onnx: beam, 4 beams, max_length 64" in " ".join(result.output.split())
    assert "tokens/s" in result.output


def test_run_export_equals_generate_on_every_builtin_prompt(demo_export: Path, demo_model) -> None:
    run = run_export(demo_export, list(BUILTIN_PROMPTS), settings=RunSettings(max_new_tokens=10, num_beams=3,
                                                                              num_return_sequences=2,
                                                                              length_penalty=0.0))
    assert isinstance(run, GenerationRun)
    assert (run.num_beams, run.num_return_sequences, run.length_penalty) == (3, 2, 0.0)
    for generated in run.prompts:
        assert generated.texts == _generate_texts(demo_model, generated.prompt, max_new_tokens=10, num_beams=3,
                                                  num_return_sequences=2, length_penalty=0.0)
        assert generated.max_length == generated.prompt_tokens + 10
        assert all(len(tokens) <= 10 for tokens in generated.tokens)
        assert generated.seconds > 0 and generated.tokens_per_second > 0
    assert len({p.texts[0] for p in run.prompts}) == len(BUILTIN_PROMPTS)  # different prompts, different texts


def test_run_json_is_one_document(demo_export: Path) -> None:
    result = runner.invoke(app, ["run", str(demo_export), DEMO_PROMPT, "the drug inhibits", "--json",
                                 "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["kind"] == "generation" and document["mode"] == "beam"
    assert [p["prompt"] for p in document["prompts"]] == [DEMO_PROMPT, "the drug inhibits"]
    assert all(p["max_length"] == p["prompt_tokens"] + 4 for p in document["prompts"])


def test_max_new_tokens_export_is_recorded_and_used_per_prompt(tiny_biogpt: Path, tmp_path: Path,
                                                                demo_model) -> None:
    """--max-new-tokens: the graph's absolute default counts from the longest parity prompt; run from each."""
    out = tmp_path / "greedy"
    result = runner.invoke(app, ["beam", str(tiny_biogpt), "-o", str(out), "--search", "greedy",
                                 "--max-new-tokens", "6", "--min-new-tokens", "2", "--no-parity"])
    assert result.exit_code == 0, result.output
    defaults = json.loads((out / "genexport.json").read_text())["settings"]["generation_defaults"]
    tokenizer = demo_model[1]
    longest = max(len(tokenizer(p)["input_ids"]) for p in BUILTIN_PROMPTS)
    assert (defaults["max_new_tokens"], defaults["max_length"]) == (6, longest + 6)
    assert (defaults["min_new_tokens"], defaults["min_length"]) == (2, longest + 2)
    run = run_export(out, [DEMO_PROMPT])
    assert isinstance(run, GenerationRun) and run.mode == "greedy"
    generated = run.prompts[0]
    assert (generated.max_length, generated.min_length) == (generated.prompt_tokens + 6,
                                                            generated.prompt_tokens + 2)
    assert generated.texts == _generate_texts(demo_model, DEMO_PROMPT, max_length=generated.max_length,
                                              min_length=generated.min_length)
    with pytest.raises(GenExportError, match="greedy graph"):
        run_export(out, [DEMO_PROMPT], settings=RunSettings(num_beams=2))


@pytest.mark.parametrize(("flags", "needle"), [
    (["--max-length", "30", "--max-new-tokens", "8"], "both --max-length and --max-new-tokens"),
    (["--min-length", "9", "--min-new-tokens", "2"], "both --min-length and --min-new-tokens"),
    (["--max-new-tokens", "0"], "must be at least 1"),
    (["--max-new-tokens", "5000"], "max_position_embeddings"),
])
def test_new_token_flags_refused_in_one_line(tiny_biogpt: Path, tmp_path: Path, flags: list[str],
                                             needle: str) -> None:
    result = runner.invoke(app, ["beam", str(tiny_biogpt), "-o", str(tmp_path / "o"), *flags])
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")]
    assert needle in " ".join(result.output.split()) and "Fix:" in result.output
    assert not (tmp_path / "o").exists()


def test_run_errors_are_one_line(demo_export: Path, tmp_path: Path) -> None:
    for args, needle in [
        ([str(tmp_path), "hi"], "has no genexport.json"),
        ([str(demo_export)], "no prompts given"),
        ([str(demo_export), "the patient", "--max-new-tokens", "5000"], "max_position_embeddings"),
        ([str(demo_export), " ".join(["the patient"] * 40)], "use --max-new-tokens"),
        ([str(demo_export), "x", "--graph", "nope.onnx"], "has no graph nope.onnx"),
    ]:
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 2, result.output
        assert needle in " ".join(result.output.split()), result.output


def test_run_embedding_prints_shape_and_norms(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    model = BertModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    BertTokenizerFast.from_pretrained(default_model_dir()).save_pretrained(folder)
    export = export_embedding(folder, tmp_path / "emb", pooling="mean", normalize=False, quantize="int8",
                              min_cosine=0.5).output
    texts = ["The spleen filters old red blood cells.", "Vitamin D?"]

    run = run_export(export, texts)
    assert isinstance(run, EmbeddingRun) and run.vectors.shape == (2, 32)
    assert run.graph == "embedding.onnx"  # the fp32 graph by default, not the int8 variant beside it
    batch = BertTokenizerFast.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(run.vectors, expected, atol=1e-4)
    np.testing.assert_allclose(run.norms, np.linalg.norm(expected, axis=-1), rtol=1e-4)

    result = runner.invoke(app, ["run", str(export), *texts])
    assert result.exit_code == 0, result.output
    assert "vectors of shape (2, 32)" in result.output and f"norm {run.norms[1]:.4f}  Vitamin D?" in result.output
    result = runner.invoke(app, ["run", str(export), "x", "--num-beams", "2"])
    assert result.exit_code == 2 and "embedding export" in result.output
    int8 = run_export(export, texts, graph="embedding.int8.onnx")
    assert isinstance(int8, EmbeddingRun) and int8.graph == "embedding.int8.onnx"
    cosine = (int8.vectors * run.vectors).sum(-1) / (np.linalg.norm(int8.vectors, axis=-1) * run.norms)
    assert cosine.min() > 0.5 and not np.array_equal(int8.vectors, run.vectors)


def test_run_sampling_graph_is_repeatable_per_seed(tiny_biogpt: Path, tmp_path: Path) -> None:
    from gen_export.search.search_graph import SearchMode

    out = export_generation(tiny_biogpt, tmp_path / "sampling", mode=SearchMode.SAMPLING, parity=False).output
    prompts = list(BUILTIN_PROMPTS)
    first, again = (run_export(out, prompts, settings=RunSettings(max_new_tokens=12, seed=7)) for _ in range(2))
    other = run_export(out, prompts, settings=RunSettings(max_new_tokens=12, seed=8))
    assert isinstance(first, GenerationRun) and first.mode == "sampling"
    texts = [p.texts for p in first.prompts]
    assert texts == [p.texts for p in again.prompts]  # the seed input is fed: same seed, same draws
    assert texts != [p.texts for p in other.prompts]  # and it matters
    assert all(len(t) == 1 and t[0] for t in texts)
