"""Generation defaults: CLI flag > generation_config.json > genexport, for both rule families."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gen_export.cli import app
from gen_export.errors import GenExportError
from gen_export.gen_defaults import CLI, CONFIG, GENEXPORT, resolve_generation_settings
from gen_export.search.hf_search import EarlyStopping
from gen_export.search.search_graph import SearchMode

CONFIG_VALUES = {"num_beams": 3, "length_penalty": 0.6, "early_stopping": "never", "max_new_tokens": 7,
                 "min_new_tokens": 2, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "top_k": 10,
                 "eos_token_id": [2, 9], "pad_token_id": 1}


def _folder(tmp_path: Path, values: dict[str, object]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "generation_config.json").write_text(json.dumps(values))
    return tmp_path


def test_transformers_rules_take_every_config_value(tmp_path: Path) -> None:
    resolved = resolve_generation_settings(_folder(tmp_path, CONFIG_VALUES), "transformers", None,
                                           {"num_beams": None, "length_penalty": 2.0})
    assert resolved.mode is SearchMode.BEAM
    assert resolved.values["num_beams"] == 3 and resolved.sources["num_beams"] == CONFIG
    assert resolved.values["length_penalty"] == 2.0 and resolved.sources["length_penalty"] == CLI
    assert resolved.sources["num_return_sequences"] == GENEXPORT
    options = resolved.hf_options
    assert options is not None
    assert options.early_stopping is EarlyStopping.NEVER
    assert options.eos_token_ids == (2, 9)
    assert (options.max_new_tokens, options.min_new_tokens) == (7, 2)
    assert options.top_k == 0  # a beam graph: sampling settings from a config do not apply
    assert resolved.values["no_repeat_ngram_size"] == 3


def test_do_sample_in_the_config_chooses_sampling(tmp_path: Path) -> None:
    values = CONFIG_VALUES | {"do_sample": True, "num_beams": 5, "top_p": 0.95, "top_k": 50}
    resolved = resolve_generation_settings(_folder(tmp_path, values), "transformers", None, {})
    assert resolved.mode is SearchMode.SAMPLING and resolved.sources["search"] == CONFIG
    assert resolved.hf_options is not None and resolved.hf_options.top_k == 50
    assert resolved.values["top_p"] == 0.95 and resolved.values["num_beams"] == 5


def test_onnxruntime_rules_ignore_config_values_they_cannot_honour_and_refuse_flags(tmp_path: Path) -> None:
    folder = _folder(tmp_path, CONFIG_VALUES)
    resolved = resolve_generation_settings(folder, "onnxruntime", None, {})
    assert resolved.hf_options is None
    assert resolved.values["early_stopping"] is False
    # New-token bounds are honoured: translated to the graph's absolute defaults (longest parity prompt + N).
    assert resolved.length_forms() == {"max_length": None, "min_length": 0, "max_new_tokens": 7, "min_new_tokens": 2}
    joined = " ".join(resolved.notes)
    assert "early_stopping=never" in joined and "--rules transformers" in joined
    assert resolved.values["length_penalty"] == 0.6  # what it can honour is taken
    with pytest.raises(GenExportError, match="--rules transformers"):
        resolve_generation_settings(folder, "onnxruntime", None, {"early_stopping": "true"})
    with pytest.raises(GenExportError, match="--rules transformers"):
        resolve_generation_settings(folder, "onnxruntime", "sampling", {"top_k": 5})


def test_no_config_gives_genexport_defaults(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    resolved = resolve_generation_settings(tmp_path, "onnxruntime", None, {})
    assert resolved.mode is SearchMode.BEAM and set(resolved.sources.values()) == {GENEXPORT}
    assert resolved.values["num_beams"] == 4 and resolved.values["early_stopping"] is False


def test_cli_records_where_each_default_came_from(tiny_biogpt: Path, tmp_path: Path) -> None:
    model = shutil.copytree(tiny_biogpt, tmp_path / "m")
    config = json.loads((model / "generation_config.json").read_text())
    config |= {"num_beams": 3, "length_penalty": 0.6, "early_stopping": "never", "max_new_tokens": 7}
    (model / "generation_config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["beam", str(model), "-o", str(tmp_path / "o"), "--rules", "transformers",
                                      "--num-return-sequences", "2", "--no-parity"])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "o" / "genexport.json").read_text())["settings"]
    assert settings["defaults_source"]["num_beams"] == CONFIG
    assert settings["defaults_source"]["num_return_sequences"] == CLI
    assert settings["generation_defaults"]["num_beams"] == 3
    assert settings["search"]["early_stopping"] == "never" and settings["search"]["max_new_tokens"] == 7
    # The same checkpoint under onnxruntime's rules: exported, with the note naming the other family.
    result = CliRunner().invoke(app, ["beam", str(model), "-o", str(tmp_path / "p"), "--no-parity"])
    assert result.exit_code == 0, result.output
    assert "--rules transformers" in " ".join(result.output.split())
