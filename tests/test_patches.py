"""Run-time patches: each still needed upstream, applied only while in use, version-guarded."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

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
    from gen_export.export.decoder import export_decoder_onnx, load_decoder
    from gen_export.search.fusion import optimize_decoder
    from gen_export.search.precision import quantize_decoder

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


# --- transformers 4.57: the vmap-free causal mask (gen_export.patches.tf_causal_mask) ---------------------------


@pytest.fixture(scope="module")
def gpt2_fixture(demo_cache: Path) -> Path:
    from fixtures_decoders import cached_checkpoint

    return cached_checkpoint("gpt2")


def _export_gpt2_unpatched(folder: Path, out: Path) -> Path:
    from gen_export.export.decoder import load_decoder
    from gen_export.export.export_spec import DecoderWithPastOnnxConfig, export_with_spec

    loaded = load_decoder(folder)
    return export_with_spec(loaded.wrapper, DecoderWithPastOnnxConfig(loaded.model.config, loaded.dims), out)


def test_gpt2_on_4_57_still_needs_vmap_free_mask(gpt2_fixture: Path, tmp_path: Path) -> None:
    """On 4.57: fails once GPT-2's mask traces without the patch (then delete tf_causal_mask). On 5.x: proves
    the patch is rightly not applied (the masks use no vmap and the unpatched export validates)."""
    from transformers import masking_utils

    from gen_export.export.decoder import load_decoder, require_passed, validate_decoder
    from gen_export.patches import tf_causal_mask

    if tf_causal_mask.needed():
        with pytest.raises(RuntimeError, match="unordered_map::at"):
            _export_gpt2_unpatched(gpt2_fixture, tmp_path / "decoder.onnx")
    else:
        # 5.x builds masks by index broadcasting unless asked for vmap.
        assert inspect.signature(masking_utils.sdpa_mask).parameters["use_vmap"].default is False
        path = _export_gpt2_unpatched(gpt2_fixture, tmp_path / "decoder.onnx")
        require_passed(validate_decoder(load_decoder(gpt2_fixture), path))


def test_broadcast_mask_equals_upstream_mask_where_applied() -> None:
    """Where the patch applies (4.57), its mask equals upstream's vmap mask on padded, offset and skip cases."""
    from transformers import masking_utils as mu

    from gen_export.patches import tf_causal_mask

    if not tf_causal_mask.needed():
        assert tf_causal_mask.installed_transformers() >= tf_causal_mask.NOT_NEEDED_RANGE[0]
        return
    attention = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    for positions, kv_length, skip in (([0, 1, 2, 3, 4, 5], 6, False), ([5], 6, False), ([3, 4, 5], 6, True)):
        cache_position = torch.tensor(positions)
        kwargs = {"batch_size": 2, "cache_position": cache_position, "kv_length": kv_length,
                  "attention_mask": attention, "allow_is_causal_skip": skip}
        expected, actual = mu.sdpa_mask(**kwargs), tf_causal_mask.sdpa_mask_by_broadcast(**kwargs)
        if expected is None:
            assert actual is None
        else:
            assert torch.equal(expected, actual)
    unpadded = {"batch_size": 1, "cache_position": torch.arange(4), "kv_length": 4,
                "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    assert mu.sdpa_mask(**unpadded) is None and tf_causal_mask.sdpa_mask_by_broadcast(**unpadded) is None


def test_mask_patch_is_scoped_and_version_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import masking_utils as mu

    from gen_export.patches import tf_causal_mask

    original, registered = mu.sdpa_mask, mu.ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]
    with tf_causal_mask.applied():
        patched = mu.sdpa_mask is tf_causal_mask.sdpa_mask_by_broadcast
        assert patched == tf_causal_mask.needed()
        assert (mu.ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is tf_causal_mask.sdpa_mask_by_broadcast) == patched
    assert mu.sdpa_mask is original and mu.ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is registered
    for version, needed in (("4.57.6", True), ("5.23.0", False), ("5.24.0", False)):
        monkeypatch.setattr(tf_causal_mask.metadata, "version", lambda name, v=version: v)
        assert tf_causal_mask.needed() is needed
    for unchecked in ("4.56.2", "5.10.0", "5.25.0"):
        monkeypatch.setattr(tf_causal_mask.metadata, "version", lambda name, v=unchecked: v)
        with pytest.raises(GenExportError, match=rf"transformers {re.escape(unchecked)} is not a version"), \
                tf_causal_mask.applied():
            pass
