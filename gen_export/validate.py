"""Checks of arguments at the library's boundary: types, finite numbers, ranges, names.

Every export function calls these before any work, so a bad value is a one-line `GenExportError` (or a
`TypeError` for a value of the wrong type, a programming error) instead of a NaN in a manifest, a graph
that rejects every request, or a traceback deep inside torch. Light: no heavy imports.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gen_export.errors import GenExportError

#: ONNX opsets the exporters and onnxruntime's generation operators are used with (17 is the default).
MIN_OPSET, MAX_OPSET = 14, 20
#: A model/ensemble name in a Triton repository: one folder name, no separators, no "." / "..".
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def require_path(name: str, value: Any, *, optional: bool = False) -> Path | None:
    """A str or os.PathLike as a Path; anything else is a TypeError naming the parameter."""
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if not text or "\x00" in text:
            raise GenExportError(f"{name} '{text}' is not a usable path", f"pass a folder path as {name}")
        return Path(text)
    raise TypeError(f"{name} must be a str or pathlib.Path, not {type(value).__name__}")


def require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def require_int(name: str, value: Any, low: int | None = None, high: int | None = None, flag: str = "") -> int:
    """An int (not a bool, not a float) within [low, high]; `flag` is how the CLI spells it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise GenExportError(f"{name} is {value}, {_must(span)}", f"pass {flag or name} within {span}")
    return value


def require_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, flag: str = "") -> float:
    """A finite real number within its range: NaN and inf are refused here, at the boundary."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise GenExportError(f"{name} is {value}, not a finite number", f"pass a finite {flag or name}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        left = "(" if low_open else "["
        span = f"{left}{low:g}, {high:g}]" if high is not None else (f"> {low:g}" if low_open else f">= {low:g}")
        raise GenExportError(f"{name} is {value:g}, {_must(span)}", f"pass {flag or name} within {span}")
    return value


def _must(span: str) -> str:
    return f"must be {span}" if span[0] in "<>" else f"must be in {span}"


def require_opset(opset: Any) -> int:
    return require_int("opset", opset, MIN_OPSET, MAX_OPSET, "--opset")


def require_prompts(name: str, prompts: Any) -> tuple[str, ...] | None:
    """None, or a non-empty sequence of non-blank strings. A bare str is a TypeError: iterated, it would
    silently become one prompt per character."""
    if prompts is None:
        return None
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"{name} must be a sequence of strings (e.g. a list or tuple), not "
                        f"{type(prompts).__name__}; wrap a single prompt as [prompt]")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise TypeError(f"{name} must hold strings, not {type(prompt).__name__}")
    if not prompts:
        raise GenExportError(f"{name} is empty", "pass at least one prompt")
    if any(not p.strip() for p in prompts):
        raise GenExportError(f"{name} holds a blank prompt", "remove blank prompts")
    return tuple(prompts)


def require_name(name: str, value: Any) -> str | None:
    """A Triton model name that stays one folder inside the repository (no '..', no '/')."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not _NAME.match(value) or value in (".", ".."):
        raise GenExportError(f"--name '{value}' is not a plain model name",
                             "use letters, digits, '_', '-' and '.' only (no '/', not '..'), e.g. --name generator")
    return value


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, shortened: for errors from third-party code."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def check_generation_values(defaults: Any, *, no_repeat_ngram_size: Any, temperature: Any, top_p: Any) -> None:
    """The generation defaults and attributes a graph is built with: types, finiteness and ranges.

    `defaults` is a `GenerationDefaults`. The ranges are what onnxruntime's search operators accept and what a
    Triton repository made from the export can serve (a default of 0 returned sequences rejects every request).
    """
    defaults.validate()  # what is fed per call (gen_export.contract.GenerationDefaults); then what is baked in
    require_int("no_repeat_ngram_size", no_repeat_ngram_size, 0, 1024, "--no-repeat-ngram-size")
    require_float("temperature", temperature, 0.0, 100.0, low_open=True, flag="--temperature")
    require_float("top_p", top_p, 0.0, 1.0, low_open=True, flag="--top-p")
