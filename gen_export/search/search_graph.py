"""Fuse onnxruntime's generation operator (BeamSearch, GreedySearch, Sampling) around the decoder.

`convert_generation` is onnxruntime's own tool for this; it is driven through its argv interface
(the only public one) from a typed `SearchGraphSpec`, with the BioGPT-specific values (pad != eos,
vocabulary size) passed explicitly and the decoder handed over ready-made with `--decoder_onnx`.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from gen_export.contract import ort_inputs
from gen_export.errors import GenExportError
from gen_export.export.architectures.base import DecoderDims
from gen_export.options import SearchMode
from gen_export.quiet import quiet_logging
from gen_export.runtime import needs_external_data

#: convert_generation's init-decoder path loads, rewrites, shape-infers and compares both decoders in memory.
#: At the BioGPT-base shape (1.4 GB fp32 decoder) it took 193 s instead of 32 s and peaked at 13.5 GB, and
#: the optimized and quantized variants were killed by the OOM killer at 22.5 GB on a 24 GB machine; so the
#: first-step decoder, a speed-up of the first step only, is built for decoders below this size.
INIT_DECODER_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True)
class SearchGraphSpec:
    """What is fixed when the graph is built (operator attributes), as opposed to its inputs."""

    mode: SearchMode
    eos_token_id: int
    pad_token_id: int
    vocab_size: int
    no_repeat_ngram_size: int = 0
    #: Sampling only: baked into the Sampling operator's attributes. There is no top_k: onnxruntime's
    #: Sampling op (and convert_generation) only has temperature, top_p, min_tokens_to_keep, filter_value
    #: and a "custom" top-p variant with presence_penalty.
    temperature: float = 1.0
    top_p: float = 1.0
    #: A separate first-step decoder that computes logits for the last prompt position only
    #: (patches/ort_init_decoder.py); built for decoders below INIT_DECODER_MAX_BYTES.
    init_decoder: bool = True

    @classmethod
    def for_model(cls, mode: SearchMode, dims: DecoderDims, **kwargs: Any) -> SearchGraphSpec:
        return cls(mode, dims.eos_token_id, dims.pad_token_id, dims.vocab_size, **kwargs)

    def as_dict(self) -> dict[str, Any]:
        """What the operator was built with, for the manifest. `init_decoder` is only a request (refused above
        INIT_DECODER_MAX_BYTES): the manifest records what was built, once, as `settings.init_decoder`."""
        settings = asdict(self) | {"mode": self.mode.value}
        del settings["init_decoder"]
        return settings


def search_graph_inputs(mode: SearchMode) -> list[str]:
    """Graph input names, in the operator's order (`attention_mask` always present): `contract.ORT_INPUTS`."""
    return ort_inputs(mode)


def build_search_graph(
    checkpoint_dir: Path, decoder_onnx: Path, output: Path, spec: SearchGraphSpec
) -> Path:
    """Run `convert_generation` on an exported decoder; returns the one-file generation graph."""
    large = needs_external_data(decoder_onnx)
    init_decoder = spec.init_decoder and not large and decoder_onnx.stat().st_size < INIT_DECODER_MAX_BYTES
    output = Path(output)
    # convert_generation writes intermediates beside its output and, when it builds an init decoder, rewrites
    # the decoder file in place (sequence length fixed to 1): it works in a scratch folder, on a copy.
    with tempfile.TemporaryDirectory(prefix="genexport-fuse-") as scratch:
        work = Path(scratch)
        decoder = decoder_onnx
        if init_decoder:
            decoder = work / "decoder.onnx"
            shutil.copyfile(decoder_onnx, decoder)
        target = work / output.name
        _convert(checkpoint_dir, decoder, target, spec, init_decoder=init_decoder, large=large)
        for produced in work.glob(f"{output.name}*"):  # the graph, and its external data if any
            shutil.move(produced, output.parent / produced.name)
    _check_operator(output, spec, init_decoder)
    return output


def _convert(checkpoint_dir: Path, decoder_onnx: Path, output: Path, spec: SearchGraphSpec, *,
             init_decoder: bool, large: bool) -> None:
    from onnxruntime.transformers import convert_generation as cg

    from gen_export.patches import ort_convert_generation, ort_init_decoder

    argv = [
        "-m", str(checkpoint_dir),
        "--model_type", "gpt2",
        "--decoder_onnx", str(decoder_onnx),
        "--output", str(output),
        "--eos_token_id", str(spec.eos_token_id),
        "--pad_token_id", str(spec.pad_token_id),
        "--vocab_size", str(spec.vocab_size),
        "--no_repeat_ngram_size", str(spec.no_repeat_ngram_size),
        "--custom_attention_mask",
        "--disable_parity",
        "--disable_perf_test",
    ]
    if not init_decoder:
        argv.append("--disable_separate_gpt2_decoder_for_init_run")
    if spec.mode is SearchMode.BEAM:
        argv.append("--output_sequences_scores")
    if spec.mode is SearchMode.SAMPLING:
        argv += ["--temperature", str(spec.temperature), "--top_p", str(spec.top_p), "--seed"]
    if large:
        argv.append("--use_external_data_format")
    generation_type = {
        SearchMode.BEAM: cg.GenerationType.BEAMSEARCH,
        SearchMode.GREEDY: cg.GenerationType.GREEDYSEARCH,
        SearchMode.SAMPLING: cg.GenerationType.SAMPLING,
    }[spec.mode]
    args = cg.parse_arguments(argv)
    try:  # quiet_logging: convert_generation logs every step on the root logger
        with quiet_logging(), ort_convert_generation.applied(), ort_init_decoder.applied(), \
                contextlib.redirect_stdout(io.StringIO()):
            cg.convert_generation_model(args, generation_type=generation_type)
    except (AssertionError, ValueError) as error:
        raise GenExportError(
            f"onnxruntime's convert_generation rejected the decoder ({error})",
            "report this as a genexport bug with the checkpoint's config.json",
        ) from None


def has_init_decoder(path: Path) -> bool:
    """Whether the fused graph carries a separate first-step decoder (the `init_decoder` attribute)."""
    return _has_init_decoder(onnx.load(str(path), load_external_data=False).graph.node[0])


def _has_init_decoder(node: onnx.NodeProto) -> bool:
    return any(a.name == "init_decoder" for a in node.attribute)


def _check_operator(path: Path, spec: SearchGraphSpec, init_decoder: bool) -> None:
    """The fused graph must carry the ids we asked for (a wrong pad id silently corrupts outputs), and the
    first-step decoder when one was asked for."""
    model = onnx.load(str(path), load_external_data=False)
    node = model.graph.node[0]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.type == a.INT}
    if attributes.get("pad_token_id") != spec.pad_token_id or attributes.get("eos_token_id") != spec.eos_token_id:
        raise GenExportError(
            f"fused graph has pad {attributes.get('pad_token_id')} / eos {attributes.get('eos_token_id')}, "
            f"expected {spec.pad_token_id} / {spec.eos_token_id}",
            "report this as a genexport bug",
        )
    if init_decoder and not _has_init_decoder(node):
        raise GenExportError(
            "convert_generation did not attach the init decoder (no logits projection found)",
            "report this as a genexport bug with the checkpoint's config.json",
        )
