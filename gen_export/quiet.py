"""Silencing chatty upstream loggers for the length of one call, and only that long.

onnxruntime's quantizers, optimizer and `convert_generation` log on the root logger (the quantizers advise
pre-processing on every call; module-level `logging.warning` even installs a handler on a root logger that
has none). genexport is a library too: whatever it changes on a caller's loggers it puts back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: The name `logging.getLogger` gives the root logger.
ROOT = ""


@contextlib.contextmanager
def quiet_logging(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise `names` (default: the root logger) to `level` for the block; restore level and handlers after."""
    loggers = [logging.getLogger(name or None) for name in (names or (ROOT,))]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(level)
        yield
    finally:
        for logger, previous_level, handlers in saved:
            logger.setLevel(previous_level)
            for handler in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(handler)  # e.g. the one logging.basicConfig adds on first use
