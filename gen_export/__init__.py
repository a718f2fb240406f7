"""genexport: Hugging Face checkpoints to ONNX Runtime and Triton artifacts, with parity proof."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: Library entry points, imported on first use: `import gen_export` (and so the CLI) stays light.
_LAZY = {"run_export": "gen_export.run", "RunSettings": "gen_export.run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gen_export' has no attribute {name!r}")
