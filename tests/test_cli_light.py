"""`genexport --help` and `--version` answer without importing torch, transformers, onnx or onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from typer.testing import CliRunner

from gen_export.cli import app

HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "optimum", "numpy")


def _heavy_modules_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the heavy modules it left in sys.modules."""
    probe = (f"import sys\n{code}\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return eval(out.stdout.strip().splitlines()[-1])  # a printed list of module names


def test_importing_the_cli_imports_nothing_heavy() -> None:
    assert _heavy_modules_after("import gen_export.cli") == []


def test_help_and_version_import_nothing_heavy() -> None:
    for argv in (["--help"], ["beam", "--help"], ["run", "--help"], ["--version"]):
        code = f"from gen_export.cli import app\ntry:\n    app({argv!r})\nexcept SystemExit:\n    pass"
        assert _heavy_modules_after(code) == [], argv


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: importing a library module does pull torch in."""
    assert "torch" in _heavy_modules_after("import gen_export.verify.parity")


def test_version_names_every_library() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    for name in ("genexport", "transformers", "onnxruntime", "torch", "onnx"):
        assert f"{name} {metadata.version(name)}" in line, line
