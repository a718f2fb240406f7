"""Run-time patches: each still needed upstream, applied only while in use, version-guarded."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gen_export.errors import GenExportError
from gen_export.patches import ort_convert_generation, ort_init_decoder


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


@pytest.fixture(scope="module")
def tiny_decoders(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from gen_export.decoder import export_decoder_onnx, load_decoder
    from gen_export.fusion import optimize_decoder
    from gen_export.precision import quantize_decoder

    folder = tmp_path_factory.mktemp("decoders")
    loaded = load_decoder(tiny_biogpt)
    exported = export_decoder_onnx(loaded, folder / "decoder.onnx")
    optimized = folder / "decoder.opt.onnx"
    optimize_decoder(exported, optimized, loaded.dims)
    decoders = {"exported": exported, "optimized": optimized}
    for precision in ("int8", "int4"):  # the logits projection quantized too: the walk must see through it
        decoders[precision] = quantize_decoder(exported, folder / f"decoder.{precision}.onnx", precision,
                                               keep_logits_fp32=False)
    return decoders


@pytest.mark.parametrize("variant", ["exported", "optimized"])
def test_upstream_init_decoder_still_rejects_biogpt(tiny_decoders: dict[str, Path], variant: str,
                                                    tmp_path: Path) -> None:
    """Fails once upstream's generator builds an init decoder for BioGPT: then delete ort_init_decoder."""
    from onnxruntime.transformers import convert_generation as cg

    built = cg.generate_gpt2_init_decoder(str(tiny_decoders[variant]), str(tmp_path / "init.onnx"), False)
    assert built is False
    assert not (tmp_path / "init.onnx").exists()


@pytest.mark.parametrize("variant", ["exported", "optimized", "int8", "int4"])
def test_init_decoder_computes_the_last_position_only(tiny_decoders: dict[str, Path], variant: str,
                                                      tmp_path: Path) -> None:
    import numpy as np

    from gen_export.runtime import make_session

    init = tmp_path / "init.onnx"
    assert ort_init_decoder.slice_last_position(str(tiny_decoders[variant]), str(init), False)
    full, last = make_session(tiny_decoders[variant]), make_session(init)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 300, size=(2, 5)).astype(np.int32)
    mask = np.ones((2, 5), np.int32)
    mask[1, :2] = 0  # left padding in the second row
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    past = {i.name: np.zeros((2, 2, 4, 0, 16), np.float32) for i in full.get_inputs() if i.name.startswith("past")}
    feed = {"input_ids": ids, "position_ids": positions, "attention_mask": mask} | past
    expected, actual = full.run(None, feed), last.run(None, feed)
    assert actual[0].shape == (2, 1, expected[0].shape[2])
    if variant == "int8":
        # Dynamic int8 quantizes activations with one scale per tensor, so one row alone gets a slightly
        # different scale than the whole prompt: close, not bit-identical (as in every later one-row step).
        np.testing.assert_allclose(actual[0], expected[0][:, -1:], atol=0.15)
        assert (actual[0].argmax(-1) == expected[0][:, -1:].argmax(-1)).all()
    else:
        np.testing.assert_allclose(actual[0], expected[0][:, -1:], atol=1e-5)
    for e, a in zip(expected[1:], actual[1:], strict=True):  # every present is still computed in full
        np.testing.assert_array_equal(e, a)


def test_init_decoder_patch_restores_and_refuses_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.transformers import convert_generation as cg

    original = cg.generate_gpt2_init_decoder
    with ort_init_decoder.applied():
        assert cg.generate_gpt2_init_decoder is ort_init_decoder.slice_last_position
    assert cg.generate_gpt2_init_decoder is original
    monkeypatch.setattr(ort_convert_generation.metadata, "version", lambda name: "1.40.0")
    with pytest.raises(GenExportError, match=r"onnxruntime 1\.40\.0 is not a version"), ort_init_decoder.applied():
        pass
