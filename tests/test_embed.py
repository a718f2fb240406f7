"""`genexport embed`: pooling in the graph, parity with PyTorch and sentence-transformers, variants."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fixtures_encoders import build_tiny_bert
from transformers import BertModel, BertTokenizerFast
from typer.testing import CliRunner

from gen_export.cli import app
from gen_export.embed import PooledEncoder, cosines, default_model_dir, export_embedding, pool
from gen_export.errors import GenExportError
from gen_export.runtime import make_session

UNSEEN = [
    "The spleen filters old red blood cells.",
    "Penicillin was discovered by accident in 1928 when mould contaminated a bacterial culture plate.",
    "Vitamin D?",
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with MiniLM's tokenizer (fast unit tests of every pooling mode)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def minilm(tmp_path_factory: pytest.TempPathFactory):
    return export_embedding(None, tmp_path_factory.mktemp("minilm") / "out", optimize=True, quantize="int8")


def _padded(folder: Path, sentences: list[str]) -> dict[str, np.ndarray]:
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    return {k: v.numpy() for k, v in tokenizer(sentences, padding=True, return_tensors="pt").items()}


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "per-token", "reduce_mean", "cls_token"])
@pytest.mark.parametrize("normalize", [False, True])
def test_every_pooling_matches_pytorch_on_padded_batch(tiny_bert: Path, tmp_path: Path, pooling: str,
                                                       normalize: bool) -> None:
    result = export_embedding(tiny_bert, tmp_path / "o", pooling=pooling, normalize=normalize)
    feed = _padded(tiny_bert, UNSEEN)
    assert feed["attention_mask"].min() == 0  # really padded
    actual = make_session(result.embedding_onnx).run(["embeddings"], feed)[0]
    model = BertModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
        expected = pool(hidden, torch.from_numpy(feed["attention_mask"]), result.pooling, normalize).numpy()
    assert cosines(expected, actual, feed["attention_mask"]).min() >= 0.99999
    if result.pooling == "per-token":
        assert actual.shape == (*feed["input_ids"].shape, 32)
    else:
        assert actual.shape == (3, 32)
    if normalize and result.pooling != "per-token":
        assert np.allclose(np.linalg.norm(actual, axis=-1), 1.0, atol=1e-5)
    graph = onnx.load(str(result.embedding_onnx))
    assert [o.name for o in graph.graph.output] == ["embeddings"]
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]


def test_max_pooling_ignores_padding(tiny_bert: Path) -> None:
    hidden = torch.zeros(1, 3, 2)
    hidden[0, 2] = 100.0  # a padded position with a huge value must not win
    hidden[0, :2] = -1.0
    out = pool(hidden, torch.tensor([[1, 1, 0]]), "max", normalize=False)
    assert out.tolist() == [[-1.0, -1.0]]


def test_unmasked_mean_differs_on_padded_batch(tiny_bert: Path) -> None:
    """What the seed exporter did (mean over every position, padding included) is wrong when padded."""
    feed = _padded(tiny_bert, UNSEEN)
    model = BertModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
    masked = pool(hidden, torch.from_numpy(feed["attention_mask"]), "mean", False).numpy()
    unmasked = hidden.mean(1).numpy()
    cos = cosines(masked, unmasked)
    longest = int(feed["attention_mask"].sum(1).argmax())
    assert cos[longest] > 0.99999  # no padding in the longest row: identical
    assert cos.min() < 0.99  # padded rows: clearly different


def test_minilm_default_matches_sentence_transformers(minilm) -> None:
    from sentence_transformers import SentenceTransformer

    assert minilm.pooling == "mean" and minilm.normalize is True
    reference = SentenceTransformer(str(default_model_dir()), device="cpu", local_files_only=True)
    expected = reference.encode(UNSEEN, convert_to_numpy=True)
    tokenizer = BertTokenizerFast.from_pretrained(minilm.output)  # the copied, self-contained tokenizer
    feed = {k: v.numpy() for k, v in tokenizer(UNSEEN, padding=True, truncation=True, max_length=256,
                                                return_tensors="pt").items()}
    actual = make_session(minilm.embedding_onnx).run(["embeddings"], feed)[0]
    assert cosines(expected, actual).min() >= 0.99999
    st_figures = [f for f in minilm.parity if f.reference == "sentence-transformers encode"]
    assert st_figures and st_figures[0].cosine_min >= 0.99999


def test_minilm_variants_report_cosines(minilm) -> None:
    variants = {v.name: v for v in minilm.variants}
    assert variants["optimized"].cosine_min > 0.9999
    assert 0.99 <= variants["int8"].cosine_min < 0.99999  # int8 is close but honestly not exact
    ops = {n.op_type for n in onnx.load(str(minilm.output / "embedding.optimized.onnx")).graph.node}
    assert "Attention" in ops
    ops = {n.op_type for n in onnx.load(str(minilm.output / "embedding.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops
    manifest = json.loads((minilm.output / "genexport.json").read_text())
    assert {v["name"] for v in manifest["parity"]["variants"]} == {"optimized", "int8"}
    assert manifest["settings"]["tokenizer"]["max_length"] == 256
    tokenizer_json = json.loads((minilm.output / "tokenizer.json").read_text())
    assert tokenizer_json["truncation"]["max_length"] == 256
    assert tokenizer_json["padding"]["strategy"] == "BatchLongest"


def test_contextual_bank_vectors_differ(tmp_path: Path) -> None:
    result = export_embedding(None, tmp_path / "tok", pooling="per_token", normalize=False)
    tokenizer = BertTokenizerFast.from_pretrained(result.output)
    session = make_session(result.embedding_onnx)
    vectors = []
    for sentence in ("the bank of the river", "withdraw cash at the bank"):
        feed = {k: v.numpy() for k, v in tokenizer([sentence], return_tensors="pt").items()}
        out = session.run(["embeddings"], feed)[0][0]
        position = tokenizer.convert_ids_to_tokens(feed["input_ids"][0].tolist()).index("bank")
        vectors.append(out[position])
    cos = float(cosines(vectors[0][None], vectors[1][None])[0])
    assert cos < 0.95, cos


def test_int8_refused_below_min_cosine(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(GenExportError, match="below --min-cosine"):
        export_embedding(tiny_bert, tmp_path / "o", quantize="int8", min_cosine=0.9999999)
    assert not (tmp_path / "o").exists()


def test_int8_export_leaves_the_root_logger_as_it_was(tiny_bert: Path, tmp_path: Path) -> None:
    """onnxruntime's quantizer logs on the root logger; genexport silences it for the call only (quiet_logging)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.INFO)  # a caller's choice, different from the ERROR genexport sets inside
    try:
        result = export_embedding(tiny_bert, tmp_path / "o", quantize="int8", min_cosine=0.5)
        assert [v.name for v in result.variants] == ["int8"]
        assert root.level == logging.INFO
        assert root.handlers == handlers
    finally:
        root.setLevel(level)


def test_encoder_wrapper_signature_has_no_numpy(tiny_bert: Path) -> None:
    model = BertModel.from_pretrained(tiny_bert).eval()
    out = PooledEncoder(model, "mean", True)(torch.tensor([[101, 2000, 102]]), torch.tensor([[1, 1, 1]]))
    assert isinstance(out, torch.Tensor)


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--pooling", "median"], "unknown pooling"),
        (["--quantize", "int4"], "unknown quantization"),
    ],
)
def test_embed_bad_options(tiny_bert: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["embed", str(tiny_bert), "--output", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "o").exists()


def test_decoder_given_to_embed_is_refused(tiny_biogpt: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["embed", str(tiny_biogpt), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "BioGptForCausalLM is a decoder model" in " ".join(result.output.split())
    assert "BertModel" in result.output
    assert not (tmp_path / "o").exists()


def test_embed_missing_tokenizer(tiny_bert: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    for name in ("tokenizer.json", "vocab.txt"):  # transformers 5.x writes no vocab.txt for BERT
        (folder / name).unlink(missing_ok=True)
    result = runner.invoke(app, ["embed", str(folder), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "tokenizer files" in result.output
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer RoBERTa with a byte-level BPE tokenizer learned from genexport's corpus."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    from gen_export.demo import CORPUS

    folder = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(CORPUS)], vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    # from_pretrained, not the constructor: transformers 5.x's constructor takes vocab/merges and silently
    # ignores vocab_file/merges_file (a 5-token tokenizer).
    RobertaTokenizerFast.from_pretrained(folder).save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=600, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1)
    RobertaModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_roberta_matches_pytorch_without_token_types(tiny_roberta: Path, tmp_path: Path, pooling: str) -> None:
    from transformers import RobertaModel, RobertaTokenizerFast

    result = export_embedding(tiny_roberta, tmp_path / "o", pooling=pooling, normalize=True)
    graph = onnx.load(str(result.embedding_onnx))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]  # one token type: no input
    tokenizer = RobertaTokenizerFast.from_pretrained(tiny_roberta)
    feed = {k: v.numpy() for k, v in tokenizer(UNSEEN, padding=True, return_tensors="pt").items()}
    assert feed["attention_mask"].min() == 0
    actual = make_session(result.embedding_onnx).run(["embeddings"], feed)[0]
    model = RobertaModel.from_pretrained(tiny_roberta).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
        expected = pool(hidden, torch.from_numpy(feed["attention_mask"]), pooling, True).numpy()
    assert cosines(expected, actual).min() >= 0.99999
