"""Run-time patches: each still needed upstream, applied only while in use, version-guarded."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gen_export.errors import GenExportError
from gen_export.patches import ort_convert_generation


def test_convert_generation_still_hardcodes_gpt2config(tiny_biogpt: Path) -> None:
    """Fails once upstream reads configs with their own class: then delete the patch."""
    from onnxruntime.transformers import convert_generation as cg

    source = inspect.getsource(cg.convert_generation_model)
    assert "GPT2Config.from_pretrained(args.model_name_or_path" in source
    misread = cg.GPT2Config.from_pretrained(tiny_biogpt)
    assert type(misread).__name__ == "GPT2Config"
    # Fields GPT-2 names differently take GPT-2's defaults instead of the checkpoint's values.
    assert misread.activation_function == "gelu_new" and misread.hidden_act == "gelu"
    assert misread.n_inner is None and misread.intermediate_size == 128


def test_patch_reads_own_config_and_restores(tiny_biogpt: Path) -> None:
    from onnxruntime.transformers import convert_generation as cg

    original = cg.GPT2Config
    with ort_convert_generation.applied():
        config = cg.GPT2Config.from_pretrained(tiny_biogpt)
        assert type(config).__name__ == "BioGptConfig"
    assert cg.GPT2Config is original


def test_patch_refuses_unchecked_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_convert_generation.metadata, "version", lambda name: "1.40.0")
    with pytest.raises(GenExportError, match=r"onnxruntime 1\.40\.0 is not a version"), \
            ort_convert_generation.applied():
        pass
