"""Architecture registry: one small module per transformers model class, registered by class name.

Adding an architecture means adding a module here and its name to `ARCHITECTURE_MODULES`; nothing
else in genexport branches on the model type.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from gen_export.errors import GenExportError

if TYPE_CHECKING:
    from gen_export.export.architectures.base import Architecture

#: The registry's list: modules imported (and so registered) on first lookup.
ARCHITECTURE_MODULES: tuple[str, ...] = ("biogpt", "bert", "roberta", "gpt2", "opt")

_REGISTRY: dict[str, type[Architecture]] = {}
_loaded = False

A = TypeVar("A", bound="type[Architecture]")


def register(cls: A) -> A:
    """Class decorator: make an architecture available under its transformers class name."""
    if cls.class_name in _REGISTRY:
        raise RuntimeError(f"architecture {cls.class_name} registered twice")
    _REGISTRY[cls.class_name] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in ARCHITECTURE_MODULES:
            importlib.import_module(f"{__name__}.{module}")
        _loaded = True


def supported(kind: str) -> list[str]:
    """Registered class names of one kind ("decoder" or "encoder"), sorted."""
    _load_all()
    return sorted(name for name, cls in _REGISTRY.items() if cls.kind == kind)


def get_architecture(class_name: str, kind: str) -> Architecture:
    """The registered architecture for `class_name`, or a one-line error naming the supported ones."""
    _load_all()
    cls = _REGISTRY.get(class_name)
    if cls is None or cls.kind != kind:
        names = ", ".join(supported(kind)) or "none"
        other = f" ({class_name} is a {cls.kind} model)" if cls is not None else ""
        raise GenExportError(
            f"architecture {class_name} is not a supported {kind}{other}",
            f"use a checkpoint of one of: {names}",
        )
    return cls()
