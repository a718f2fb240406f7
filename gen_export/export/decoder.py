"""`genexport decoder`: the with-past decoder in onnxruntime's GPT-2 subgraph layout, validated.

The decoder is exported by `torch.onnx.export` with `DecoderWithPastOnnxConfig`, then checked three
ways: `onnx.checker`, onnxruntime's own `verify_gpt2_subgraph`, and logits/present tensors against
PyTorch on a first step with empty past, a one-token step with past, and a left-padded batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from transformers import PreTrainedModel

from gen_export.artifacts import Manifest, staged_output
from gen_export.errors import ParityError
from gen_export.export.architectures.base import (
    DecoderArchitecture,
    DecoderDims,
    PastPresentDecoder,
    ort_position_ids,
)
from gen_export.export.checkpoint import Checkpoint, open_checkpoint
from gen_export.export.export_spec import DEFAULT_OPSET, DecoderWithPastOnnxConfig, export_with_spec
from gen_export.export.genai import write_genai_files
from gen_export.export.tied_embeddings import share_tied_embedding_file
from gen_export.manifest import DecoderSettings
from gen_export.progress import Steps
from gen_export.runtime import check_model, graph_io, make_session
from gen_export.validate import require_bool, require_float, require_opset, require_path

DECODER_FILE = "decoder.onnx"
#: Tolerance on logits and present tensors (float32 graph vs float32 PyTorch): |diff| <= atol + rtol * max|ref|.
#: The relative part matters for large models with large logits, where float32 sums differ in the last bits.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-5


@dataclass
class ToleranceCheck:
    """One validation scenario: the largest absolute difference per output family."""

    name: str
    logits_max_abs: float
    present_max_abs: float
    logits_tolerance: float
    present_tolerance: float

    @property
    def passed(self) -> bool:
        return self.logits_max_abs <= self.logits_tolerance and self.present_max_abs <= self.present_tolerance


@dataclass
class DecoderValidation:
    checker: bool = False
    ort_gpt2_subgraph: bool = False
    cases: list[ToleranceCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.checker and self.ort_gpt2_subgraph and all(c.passed for c in self.cases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "onnx_checker": self.checker,
            "ort_verify_gpt2_subgraph": self.ort_gpt2_subgraph,
            "cases": [asdict(c) | {"passed": c.passed} for c in self.cases],
            "passed": self.passed,
        }


@dataclass
class DecoderExportResult:
    output: Path
    decoder_onnx: Path
    manifest: Path
    dims: DecoderDims
    validation: DecoderValidation
    timings: dict[str, float]


@dataclass
class LoadedDecoder:
    """A checkpoint opened for decoder export: the HF model, its wrapper and dimensions."""

    checkpoint: Checkpoint
    architecture: DecoderArchitecture
    model: PreTrainedModel
    wrapper: PastPresentDecoder
    dims: DecoderDims


def load_decoder(model_dir: Path) -> LoadedDecoder:
    checkpoint = open_checkpoint(model_dir, kind="decoder")
    architecture = checkpoint.architecture
    assert isinstance(architecture, DecoderArchitecture)
    model = architecture.load_model(checkpoint.path)
    wrapper = architecture.wrap(model).eval()
    return LoadedDecoder(checkpoint, architecture, model, wrapper, wrapper.dims)


def export_decoder_onnx(loaded: LoadedDecoder, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace the wrapper with `torch.onnx.export` (TorchScript; external data above 2 GB).

    On transformers 4.57 the vmap-free causal mask (`gen_export.patches.tf_causal_mask`) is applied for the trace.
    """
    from gen_export.patches import tf_causal_mask

    onnx_config = DecoderWithPastOnnxConfig(loaded.model.config, loaded.dims)
    with tf_causal_mask.applied():
        export_with_spec(loaded.wrapper, onnx_config, path, opset)
    share_tied_embedding_file(path)  # tied input/output embeddings stored once (gen_export/export/tied_embeddings.py)
    return path


def verify_ort_gpt2_subgraph(path: Path) -> None:
    """onnxruntime's own contract check, the one `convert_generation` runs before fusing."""
    from onnxruntime.transformers.convert_generation import verify_gpt2_subgraph

    graph = onnx.load(str(path), load_external_data=False).graph
    try:
        verify_gpt2_subgraph(graph, "fp32")
    except ValueError as error:
        raise ParityError(
            f"decoder fails onnxruntime's GPT-2 subgraph contract ({error})",
            "report this as a genexport bug with the checkpoint's config.json",
        ) from None


def _run_both(
    wrapper: PastPresentDecoder, session: Any, ids: torch.Tensor, mask: torch.Tensor, past: list[torch.Tensor]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    past_len = past[0].shape[3]
    positions = ort_position_ids(mask)[:, past_len:]
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(ids, positions, mask, *past)]
    feed = {
        "input_ids": ids.to(torch.int32).numpy(),
        "position_ids": positions.to(torch.int32).numpy(),
        "attention_mask": mask.to(torch.int32).numpy(),
    } | {f"past_{i}": p.numpy() for i, p in enumerate(past)}
    actual = session.run(None, feed)
    return expected, actual


def _check(name: str, expected: list[np.ndarray], actual: list[np.ndarray], atol: float,
           real_positions: np.ndarray | None = None) -> ToleranceCheck:
    logits_e, logits_a = expected[0], actual[0]
    present_e, present_a = expected[1:], actual[1:]
    if real_positions is not None:
        # Real (unpadded) positions only. Nothing ever attends to a padding position, so its logits and its
        # key/value are free: a fused Attention operator computes them differently (-10000 mask fill).
        logits_e, logits_a = logits_e[real_positions], logits_a[real_positions]
        # present is (2, batch, heads, positions, head_dim): bring batch and positions to the front.
        present_e = [p.transpose(1, 3, 0, 2, 4)[real_positions] for p in present_e]
        present_a = [p.transpose(1, 3, 0, 2, 4)[real_positions] for p in present_a]
    present = max(float(np.abs(e - a).max()) for e, a in zip(present_e, present_a, strict=True))
    present_scale = max(float(np.abs(e).max()) for e in present_e)
    return ToleranceCheck(name, float(np.abs(logits_e - logits_a).max()), present,
                          atol + DEFAULT_RTOL * float(np.abs(logits_e).max()), atol + DEFAULT_RTOL * present_scale)


def validate_decoder(loaded: LoadedDecoder, path: Path, atol: float = DEFAULT_ATOL) -> DecoderValidation:
    """Compare graph and PyTorch on the three shape families the generation operator uses."""
    validation = DecoderValidation()
    check_model(path)
    validation.checker = True
    verify_ort_gpt2_subgraph(path)
    validation.ort_gpt2_subgraph = True

    session = make_session(path)
    wrapper, dims = loaded.wrapper, loaded.dims
    generator = torch.Generator().manual_seed(1234)

    def tokens(batch: int, length: int) -> torch.Tensor:
        return torch.randint(3, dims.vocab_size, (batch, length), generator=generator)

    # 1. First step: a whole prompt, empty past.
    ids = tokens(2, 6)
    mask = torch.ones_like(ids)
    expected, actual = _run_both(wrapper, session, ids, mask, wrapper.empty_past(2))
    validation.cases.append(_check("first step, empty past (batch 2, 6 tokens)", expected, actual, atol))

    # 2. One-token step with the past that PyTorch produced for the prompt.
    past = [torch.from_numpy(p) for p in expected[1:]]
    step_ids = tokens(2, 1)
    step_mask = torch.ones(2, 7, dtype=torch.int64)
    expected, actual = _run_both(wrapper, session, step_ids, step_mask, past)
    validation.cases.append(_check("one-token step with past (past 6)", expected, actual, atol))

    # 3. Left-padded batch of three prompts of different lengths.
    lengths = [7, 4, 2]
    ids = tokens(3, 7)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, 7 - length:] = 1
        ids[row, : 7 - length] = dims.pad_token_id
    expected, actual = _run_both(wrapper, session, ids, mask, wrapper.empty_past(3))
    rows = mask.numpy().astype(bool)
    validation.cases.append(_check("left-padded batch (lengths 7, 4, 2)", expected, actual, atol, rows))
    return validation


def require_passed(validation: DecoderValidation) -> None:
    failed = [c for c in validation.cases if not c.passed]
    if failed:
        worst = failed[0]
        raise ParityError(
            f"decoder graph differs from PyTorch in '{worst.name}' (logits {worst.logits_max_abs:.2e} vs "
            f"tolerance {worst.logits_tolerance:.2e}, present {worst.present_max_abs:.2e} vs "
            f"{worst.present_tolerance:.2e})",
            "report this as a genexport bug; nothing was written",
        )


def export_decoder(
    model_dir: Path,
    output: Path,
    *,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    steps: Steps | None = None,
) -> DecoderExportResult:
    """Export `model_dir`'s decoder to `output/decoder.onnx` with a validation report and manifest."""
    steps = steps or Steps()
    model_dir = require_path("model_dir", model_dir)
    output = require_path("output", output)
    require_bool("force", force)
    require_opset(opset)
    require_float("atol", atol, 0.0, 1.0, low_open=True, flag="--atol")
    with staged_output(output, force, model_dirs=(model_dir,)) as staging:
        with steps.step("load checkpoint"):
            loaded = load_decoder(model_dir)
        with steps.step("export decoder (torch.onnx, TorchScript)"):
            export_decoder_onnx(loaded, staging / DECODER_FILE, opset)
        with steps.step("validate decoder against PyTorch"):
            validation = validate_decoder(loaded, staging / DECODER_FILE, atol)
            require_passed(validation)
        genai = write_genai_files(loaded.checkpoint.path, staging, loaded.dims, DECODER_FILE)  # onnxruntime-genai
        manifest = Manifest(
            command="decoder",
            source=loaded.checkpoint.describe(),
            graph={DECODER_FILE: graph_io(staging / DECODER_FILE)},
            settings=DecoderSettings(opset=opset, atol=atol, dims=asdict(loaded.dims), genai=genai.as_dict()),
            validation={"decoder": validation.as_dict()},
        )
        manifest.write(staging)
    output = output.resolve()
    return DecoderExportResult(output, output / DECODER_FILE, output / "genexport.json", loaded.dims,
                               validation, steps.timings)


