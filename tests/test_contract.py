"""The generation contract (gen_export.contract): declared once, and what every builder and feeder uses.

The declared inputs and outputs are compared with graphs actually built by both families, so a builder that
drifts from the contract (a renamed input, an int64 where int32 is declared) fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gen_export.contract import (
    BEAM_OUTPUTS,
    GRAPH_INPUTS,
    ONE_SEQUENCE_OUTPUTS,
    CallSettings,
    GenerationDefaults,
    ort_inputs,
    transformers_fed_inputs,
    transformers_graph_inputs,
)
from gen_export.errors import GenExportError
from gen_export.options import SearchMode


@pytest.fixture(scope="module")
def exported_decoder(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory):
    from gen_export.export.decoder import export_decoder_onnx, load_decoder

    loaded = load_decoder(tiny_biogpt)
    folder = tmp_path_factory.mktemp("contract")
    return loaded, export_decoder_onnx(loaded, folder / "decoder.onnx"), folder


def _declared(tensors: list[dict]) -> list[tuple[str, str, tuple]]:
    return [(t["name"], t["dtype"], tuple(t["dims"])) for t in tensors]


@pytest.mark.parametrize("mode", list(SearchMode))
def test_onnxruntime_graphs_take_the_declared_inputs(exported_decoder, mode: SearchMode) -> None:
    from gen_export.runtime import graph_io
    from gen_export.search.search_graph import SearchGraphSpec, build_search_graph

    loaded, decoder, folder = exported_decoder
    graph = folder / f"ort_{mode.value}.onnx"
    build_search_graph(loaded.checkpoint.path, decoder, graph, SearchGraphSpec.for_model(mode, loaded.dims))
    inputs = graph_io(graph)["inputs"]
    assert [t["name"] for t in inputs] == ort_inputs(mode)
    # The operator names its own dims; element types are the contract's.
    assert [t["dtype"] for t in inputs] == [GRAPH_INPUTS[n].dtype for n in ort_inputs(mode)]


@pytest.mark.parametrize(("mode", "num_beams"), [("greedy", 1), ("beam", 4), ("sampling", 1), ("sampling", 3)])
def test_transformers_graphs_take_and_return_what_is_declared(exported_decoder, mode: str, num_beams: int) -> None:
    from gen_export.runtime import graph_io
    from gen_export.search.hf_search import HfOptions, build_hf_search_graph

    loaded, decoder, folder = exported_decoder
    spec = HfOptions().spec(mode, loaded.dims, num_beams=num_beams)
    graph = folder / f"hf_{spec.mode.value}.onnx"
    build_hf_search_graph(decoder, graph, spec)
    io = graph_io(graph)
    names = transformers_graph_inputs(spec.mode.beams, spec.mode.sampling)
    assert _declared(io["inputs"]) == [(n, GRAPH_INPUTS[n].dtype, GRAPH_INPUTS[n].dims) for n in names]
    expected_outputs = BEAM_OUTPUTS if spec.mode.beams else ONE_SEQUENCE_OUTPUTS
    assert _declared(io["outputs"]) == [(t.name, t.dtype, t.dims) for t in expected_outputs]
    fed = transformers_fed_inputs(spec.mode.beams, spec.mode.sampling)
    assert ("seed" in fed) is spec.mode.sampling and "max_new_tokens" not in fed and "top_k" not in fed


def test_call_settings_feed_the_declared_types_and_only_the_graph_inputs() -> None:
    ids = np.array([[5, 6, 7]], dtype=np.int64)
    call = CallSettings(max_length=20, min_length=4, num_beams=3, num_return_sequences=2, length_penalty=0.5,
                        repetition_penalty=1.25, seed=9)
    feed = call.feed(ids, np.ones_like(ids), ort_inputs(SearchMode.BEAM))
    assert list(feed) == ort_inputs(SearchMode.BEAM)
    assert feed["input_ids"].dtype == np.int32 and feed["input_ids"].tolist() == [[5, 6, 7]]
    assert feed["max_length"].tolist() == [20] and feed["max_length"].dtype == np.int32
    assert feed["num_return_sequences"].tolist() == [2]
    assert feed["length_penalty"].dtype == np.float32 and feed["length_penalty"].tolist() == [0.5]
    sampling = call.feed(ids, np.ones_like(ids), ort_inputs(SearchMode.SAMPLING))
    assert sampling["seed"].tolist() == [9] and "num_beams" not in sampling
    with pytest.raises(KeyError, match="seed"):  # a sampling graph's seed must be given
        CallSettings(max_length=20).feed(ids, np.ones_like(ids), ort_inputs(SearchMode.SAMPLING))


@pytest.mark.parametrize(("call", "needle"), [
    (CallSettings(max_length=20, num_beams=2, num_return_sequences=3), "larger than num_beams 2"),
    (CallSettings(max_length=5), "not above the prompt length 5"),
    (CallSettings(max_length=200), "above the model's max_position_embeddings 128"),
    (CallSettings(max_length=20, min_length=20), "min_length 20 is not below max_length 20"),
    (CallSettings(max_length=20, num_beams=200, num_return_sequences=1), "outside 1..128"),
    (CallSettings(max_length=20, repetition_penalty=0.0), "repetition_penalty must be > 0"),
])
def test_call_settings_refuse_what_the_operators_cannot_run(call: CallSettings, needle: str) -> None:
    CallSettings(max_length=20, num_beams=2, num_return_sequences=2).check(prompt_len=5, max_positions=128)
    with pytest.raises(GenExportError, match=needle.replace(".", r"\.")) as caught:
        call.check(prompt_len=5, max_positions=128)
    assert "\n" not in str(caught.value)


def test_generation_defaults_validate_themselves_and_feed_call_settings() -> None:
    defaults = GenerationDefaults(max_length=30, num_beams=4, num_return_sequences=2)
    defaults.validate()
    assert defaults.call_settings() == CallSettings(max_length=30, num_beams=4, num_return_sequences=2)
    with pytest.raises(TypeError, match="num_beams"):
        GenerationDefaults(num_beams="4").validate()  # type: ignore[arg-type]
    with pytest.raises(GenExportError, match="num_return_sequences"):
        GenerationDefaults(num_return_sequences=0).validate()
    with pytest.raises(ValueError, match="resolve max_length first"):
        GenerationDefaults().call_settings()


def test_triton_request_parameters_come_from_the_contract() -> None:
    from gen_export.serve.triton import GENERATOR_PARAMETERS

    assert GENERATOR_PARAMETERS == {
        "MAX_NEW_TOKENS": ("TYPE_INT32", "max_length"), "MIN_NEW_TOKENS": ("TYPE_INT32", "min_length"),
        "NUM_BEAMS": ("TYPE_INT32", "num_beams"), "NUM_RETURN_SEQUENCES": ("TYPE_INT32", "num_return_sequences"),
        "LENGTH_PENALTY": ("TYPE_FP32", "length_penalty"), "REPETITION_PENALTY": ("TYPE_FP32", "repetition_penalty"),
        "SEED": ("TYPE_INT32", "seed"),
    }
