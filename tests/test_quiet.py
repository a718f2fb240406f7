"""quiet_logging: silence for one block, then every level and handler as the caller left it."""

from __future__ import annotations

import logging

import pytest

from gen_export.quiet import quiet_logging


def test_levels_and_handlers_are_restored_even_on_error() -> None:
    root, named = logging.getLogger(), logging.getLogger("optimum")
    saved = root.level, named.level, list(root.handlers)
    root.setLevel(logging.DEBUG)
    named.setLevel(logging.WARNING)
    try:
        with pytest.raises(RuntimeError), quiet_logging():
            assert root.level == logging.ERROR
            root.addHandler(logging.NullHandler())  # what logging.basicConfig does on a bare root logger
            raise RuntimeError("the quantizer failed")
        assert root.level == logging.DEBUG and root.handlers == saved[2]
        with quiet_logging("optimum", "transformers"):
            assert named.level == logging.ERROR and root.level == logging.DEBUG  # only the named ones
        assert named.level == logging.WARNING
    finally:
        root.setLevel(saved[0])
        named.setLevel(saved[1])
