"""Shared by the python-backend models: parameters, import path, BYTES decoding, errors.

Copied next to each model.py (whose genexport header has already put the serving packages on sys.path).
"""


import json
from typing import Any


def parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


class RequestError(ValueError):
    """A bad request: answered with a TritonError, the model keeps serving."""


def decode_texts(values: Any) -> list[str]:
    texts = []
    for value in values.reshape(-1).tolist():
        raw = value if isinstance(value, bytes) else str(value).encode()
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
