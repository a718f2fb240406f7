"""sentence-transformers folders: both layouts read, anything else refused, a lost Normalize cannot pass.

The folders are saved by the installed sentence-transformers itself (5.7 on the transformers 4.57 line,
6.2 on the 5.x line), so each CI line proves the layout its own sentence-transformers writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_encoders import build_tiny_bert

from gen_export import embed
from gen_export.embed import compare, default_model_dir, export_embedding, read_sentence_transformers
from gen_export.errors import GenExportError, ParityError


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("st-bert"))


def _save_st(bert_folder: Path, out: Path, pooling: str, normalize: bool, max_seq_length: int) -> Path:
    """Build a SentenceTransformer from the tiny BERT and save it with the installed library."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(bert_folder), max_seq_length=max_seq_length)
    modules = [transformer, models.Pooling(32, pooling_mode=pooling)]
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def st_saved(bert_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_st(bert_folder, tmp_path_factory.mktemp("st") / "saved", "max", normalize=True, max_seq_length=40)


def test_installed_sentence_transformers_layout_is_read(st_saved: Path) -> None:
    import sentence_transformers

    found = read_sentence_transformers(st_saved)
    assert found == embed.SentenceTransformersDefaults(pooling="max", normalize=True, max_seq_length=40), (
        sentence_transformers.__version__, (st_saved / "modules.json").read_text())


def test_legacy_layout_is_read() -> None:
    """all-MiniLM-L6-v2 as published: `models.Pooling`, boolean pooling keys, max_seq_length 256."""
    found = read_sentence_transformers(default_model_dir())
    assert found == embed.SentenceTransformersDefaults(pooling="mean", normalize=True, max_seq_length=256)
    assert "sentence_transformers.models.Pooling" in (default_model_dir() / "modules.json").read_text()


def test_saved_folder_exports_with_its_normalisation_and_length(st_saved: Path, tmp_path: Path) -> None:
    result = export_embedding(st_saved, tmp_path / "o")
    assert (result.pooling, result.normalize) == ("max", True)
    st_figures = [f for f in result.parity if f.reference == "sentence-transformers encode"]
    assert st_figures and st_figures[0].passed and st_figures[0].norm_max_rel_diff < 1e-5
    manifest = json.loads(result.manifest.read_text())
    assert manifest["settings"]["tokenizer"]["max_length"] == 40


def test_lost_normalize_fails_parity(st_saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that misses Normalize yields graphs whose cosines still match; the norm check catches it."""
    real = embed.read_sentence_transformers

    def without_normalize(model_dir: Path) -> embed.SentenceTransformersDefaults | None:
        found = real(model_dir)
        assert found is not None
        found.normalize = False
        return found

    monkeypatch.setattr(embed, "read_sentence_transformers", without_normalize)
    with pytest.raises(ParityError, match="embedding norms differ") as error:
        export_embedding(st_saved, tmp_path / "o")
    assert "min cosine 1.0000" in str(error.value) or "min cosine 0.99999" in str(error.value)
    assert not (tmp_path / "o").exists()


def test_compare_sees_norms_not_only_directions() -> None:
    rows = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    unit = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    same = compare("ref", unit, unit.copy(), np.ones((4, 1)))
    scaled = compare("ref", unit, rows, np.ones((4, 1)))
    assert same.passed and same.norm_max_rel_diff == 0.0
    assert scaled.cosine_min > 0.99999 and not scaled.passed


def _edited(st_saved: Path, tmp_path: Path, edit: str) -> Path:
    folder = Path(shutil.copytree(st_saved, tmp_path / "edited"))
    modules = json.loads((folder / "modules.json").read_text())
    if edit == "dense":
        modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    elif edit == "custom":
        modules[1]["type"] = "my_package.pooling.FancyPooling"
    else:
        pooling_dir = folder / modules[1]["path"]
        config = json.loads((pooling_dir / "config.json").read_text())
        config.pop("pooling_mode", None)
        config.update({"pooling_mode_lasttoken": True} if edit == "lasttoken" else
                      {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})
        (pooling_dir / "config.json").write_text(json.dumps(config))
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


@pytest.mark.parametrize(
    ("edit", "named"),
    [("dense", "a Dense module"), ("custom", "my_package.pooling.FancyPooling"),
     ("lasttoken", "pooling mode lasttoken"), ("two_modes", "pooling mode mean, max")],
)
def test_unrecognised_folder_is_an_error_naming_it(st_saved: Path, tmp_path: Path, edit: str, named: str) -> None:
    folder = _edited(st_saved, tmp_path, edit)
    with pytest.raises(GenExportError, match="does not understand") as error:
        read_sentence_transformers(folder)
    assert named in str(error.value)
    with pytest.raises(GenExportError, match="does not understand"):
        export_embedding(folder, tmp_path / "o")
    assert not (tmp_path / "o").exists()
