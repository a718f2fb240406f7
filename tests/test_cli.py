"""The CLI on bad input: one line naming problem and fix, exit code 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gen_export.cli import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Fix:" in " ".join(output.split())
    for needle in needles:
        assert needle in " ".join(output.split()), output


def test_missing_folder(tmp_path: Path) -> None:
    code, out = _run("beam", str(tmp_path / "nope"), "--output", str(tmp_path / "o"))
    _assert_one_line_error(code, out, "does not exist")
    assert not (tmp_path / "o").exists()


def test_no_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    code, out = _run("decoder", str(tmp_path / "m"), "--output", str(tmp_path / "o"))
    _assert_one_line_error(code, out, "no config.json")
    assert not (tmp_path / "o").exists()


def test_unsupported_architecture_names_supported(tiny_biogpt: Path, tmp_path: Path) -> None:
    model = _copy(tiny_biogpt, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    code, out = _run("beam", str(model), "--output", str(tmp_path / "o"))
    _assert_one_line_error(code, out, "LlamaForCausalLM", "BioGptForCausalLM")
    assert not (tmp_path / "o").exists()


def test_missing_tokenizer(tiny_biogpt: Path, tmp_path: Path) -> None:
    model = _copy(tiny_biogpt, tmp_path / "m")
    (model / "merges.txt").unlink()
    code, out = _run("beam", str(model), "--output", str(tmp_path / "o"))
    _assert_one_line_error(code, out, "tokenizer files", "merges.txt")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--num-beams", "2", "--num-return-sequences", "3"], "larger than num_beams"),
        (["--max-length", "2"], "not above the prompt length"),
        (["--max-length", "100000"], "max_position_embeddings"),
        (["--early-stopping", "true"], "--rules transformers"),
        (["--rules", "magic"], "unknown rules"),
        (["--search", "sampling", "--top-k", "50"], "--rules transformers"),
        (["--search", "nucleus"], "unknown search"),
    ],
)
def test_bad_generation_flags(tiny_biogpt: Path, tmp_path: Path, flags: list[str], needle: str) -> None:
    code, out = _run("beam", str(tiny_biogpt), "--output", str(tmp_path / "o"), *flags)
    _assert_one_line_error(code, out, needle)
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_force(tiny_biogpt: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("user data")
    code, out = _run("beam", str(tiny_biogpt), "--output", str(out_dir))
    _assert_one_line_error(code, out, "--force")
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"]


def test_main_job_on_builtin_default(tmp_path: Path, demo_cache: Path) -> None:
    """README's main command: no model argument -> the demo model, parity table, exit 0."""
    code, out = _run("beam", "--output", str(tmp_path / "demo"))
    assert code == 0, out
    assert "small demo" in " ".join(out.split())
    assert "Token parity" in out and "MISMATCH" not in out
    assert (tmp_path / "demo" / "beam_search.onnx").is_file()
    assert not list(tmp_path.glob(".demo.staging-*"))
