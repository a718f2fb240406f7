"""Shared by the python-backend models: parameters, import path, BYTES decoding, request limits, errors.

Copied next to each model.py (whose genexport header has already put the serving packages on sys.path).
"""


import json
import math
from typing import Any

#: Request limits when config.pbtxt sets none (genexport writes them; `genexport triton --max-*` sets them).
DEFAULT_MAX_TEXTS = 16
DEFAULT_MAX_TEXT_BYTES = 32 * 1024
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024


def parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


class RequestError(ValueError):
    """A bad request: answered with a TritonError (a client error, HTTP 400), the model keeps serving."""


def client_error(pb_utils: Any, message: str) -> Any:
    """A TritonError with the INVALID_ARG code where the python backend has codes (23.10 and later), which
    Triton answers with HTTP 400 / gRPC INVALID_ARGUMENT; older backends know one code only (HTTP 500)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


class Limits:
    """Texts per request, bytes per text and bytes per request, read from the model's parameters."""

    def __init__(self, params: dict[str, str], max_texts: int | None = None) -> None:
        self.max_texts = int(params.get("max_texts", max_texts or DEFAULT_MAX_TEXTS))
        self.max_text_bytes = int(params.get("max_text_bytes", DEFAULT_MAX_TEXT_BYTES))
        self.max_request_bytes = int(params.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES))


def decode_texts(values: Any, limits: Limits) -> list[str]:
    """The request's strings, refused on size BEFORE any decoding or tokenizing: a request of 16 x 1 MB is
    answered at once instead of holding the model instance (and the requests queued behind it)."""
    flat = values.reshape(-1)
    if flat.size > limits.max_texts:
        raise RequestError(f"{flat.size} texts in one request: send at most {limits.max_texts}")
    raws = [value if isinstance(value, bytes) else str(value).encode() for value in flat.tolist()]
    total = 0
    for raw in raws:
        if len(raw) > limits.max_text_bytes:
            raise RequestError(f"a text of {len(raw)} bytes: send at most {limits.max_text_bytes} bytes per text")
        total += len(raw)
    if total > limits.max_request_bytes:
        raise RequestError(f"{total} bytes of text in one request: send at most {limits.max_request_bytes}")
    texts = []
    for raw in raws:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("TEXT is not valid UTF-8: send UTF-8 encoded strings") from None
        if not text.strip():
            raise RequestError("TEXT is empty: send at least one non-blank string")
        texts.append(text)
    if not texts:
        raise RequestError("TEXT has no elements: send at least one string")
    return texts


def finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise RequestError(f"{name} is {value}: send a finite number")
    return value
