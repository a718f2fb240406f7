"""onnxruntime-genai runs `genexport decoder`'s output as written: genai_config.json (model type gpt2) beside
decoder.onnx, greedy tokens equal to `generate`'s on BioGPT (demo tiny), GPT-2 and OPT fixtures.

genai's `get_sequence` leaves out EOS (`generate` keeps it), so both are cut at the first EOS. A deliberately
wrong config (layer count off by one) must fail to load, so the comparison cannot pass by accident.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures_decoders import cached_checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer

from gen_export.export.decoder import export_decoder
from gen_export.export.genai import GENAI_CONFIG

og = pytest.importorskip("onnxruntime_genai", reason="pip install 'genexport[deploy]' (onnxruntime-genai)")

PROMPTS = ("the patient was treated with", "mutations in tp53 cause", "loss of pten leads to",
           "expression of egfr was reduced in")
NEW_TOKENS = 16


@pytest.fixture(scope="module", params=["biogpt", "gpt2", "opt"])
def exported(request: pytest.FixtureRequest, tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    checkpoint = tiny_biogpt if request.param == "biogpt" else cached_checkpoint(request.param)
    result = export_decoder(checkpoint, tmp_path_factory.mktemp(f"genai-{request.param}") / "out")
    return request.param, checkpoint, result


def _cut(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def _genai_greedy(model: Any, ids: list[int], max_length: int, min_length: int = 0) -> list[int]:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, num_beams=1, max_length=max_length, min_length=min_length)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([ids], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)][len(ids):]


def test_genai_greedy_tokens_equal_generate(exported: Any) -> None:
    kind, checkpoint, result = exported
    config = json.loads((result.output / GENAI_CONFIG).read_text())
    dims = result.dims
    assert config["model"]["type"] == "gpt2"
    assert config["model"]["decoder"]["num_hidden_layers"] == dims.num_layers
    assert config["model"]["decoder"]["inputs"]["past_names"] == "past_%d"
    assert config["model"]["vocab_size"] == dims.vocab_size and config["model"]["context_length"] == dims.max_positions
    manifest = json.loads((result.output / "genexport.json").read_text())
    assert manifest["settings"]["genai"]["search"] == config["search"]

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model = og.Model(str(result.output))
    compared = 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        for min_new in (0, 8):  # min_length keeps both going past an early EOS: longer sequences compared
            with torch.no_grad():
                expected = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       do_sample=False, num_beams=1, max_length=len(ids) + NEW_TOKENS,
                                       min_length=len(ids) + min_new, pad_token_id=dims.pad_token_id)
            expected_new = _cut(expected[0, len(ids):].tolist(), dims.eos_token_id)
            actual = _genai_greedy(model, ids, len(ids) + NEW_TOKENS, len(ids) + min_new)
            assert actual == expected_new, (kind, prompt, min_new)
            compared += len(actual)
    assert compared >= 40  # enough tokens that agreement is not luck


def test_genai_tokenizer_where_the_architecture_allows(exported: Any) -> None:
    kind, checkpoint, result = exported
    note = json.loads((result.output / "genexport.json").read_text())["settings"]["genai"]
    if kind == "biogpt":  # Moses + BPE in Python: no tokenizer.json; genai is driven with ids
        assert note["tokenizer"] is False and not (result.output / "tokenizer.json").exists()
        return
    assert note["tokenizer"] is True
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    genai_tokenizer = og.Tokenizer(og.Model(str(result.output)))
    for prompt in PROMPTS:
        expected = tokenizer(prompt)["input_ids"]
        if kind == "opt":  # genai ignores tokenizer.json's post-processor: OPT's leading </s> is the caller's
            assert expected[0] == result.dims.bos_token_id
            expected = expected[1:]
        assert list(genai_tokenizer.encode(prompt)) == expected
        assert genai_tokenizer.decode(np.array(expected, dtype=np.int32)).strip() == prompt


def test_a_wrong_config_is_refused(exported: Any, tmp_path: Path) -> None:
    _, _, result = exported
    broken = tmp_path / "broken"
    shutil.copytree(result.output, broken)
    config = json.loads((broken / GENAI_CONFIG).read_text())
    config["model"]["decoder"]["num_hidden_layers"] += 1  # asks for past_L, which the graph lacks
    (broken / GENAI_CONFIG).write_text(json.dumps(config))
    with pytest.raises(Exception, match=rf"(?i)past_{result.dims.num_layers}|not found|input"):
        model = og.Model(str(broken))
        _genai_greedy(model, [5, 6, 7], 8)
