"""Make `convert_generation` read a checkpoint's config with its own class, not `GPT2Config`.

Upstream: onnxruntime.transformers.convert_generation, checked on onnxruntime 1.32.0.

Why: its GPT-2 path calls `GPT2Config.from_pretrained(model_dir)` for every `--model_type gpt2`
conversion. A BioGPT or OPT folder is then read as a GPT-2 config: transformers warns "You are using a
model of type biogpt to instantiate a model of type gpt2 ... can yield errors", and fields GPT-2
names differently silently take GPT-2 defaults (`activation_function` "gelu_new" where BioGPT says
`hidden_act` "gelu", `n_inner` None where it says `intermediate_size`).
Those values are not used for the graph we hand over with `--decoder_onnx`, but a misread config
and a scary warning are not something a user should have to reason about, and the pad/eos/vocab
values are passed explicitly anyway. For the duration of one conversion, the module's `GPT2Config`
name is bound to `AutoConfig`, which reads each checkpoint with its own config class.

Remove when: convert_generation stops hard-coding `GPT2Config` (the test
`tests/test_patches.py::test_convert_generation_still_hardcodes_gpt2config` then fails).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from packaging.version import Version

from gen_export.errors import GenExportError

#: onnxruntime releases this patch was checked against ([low, high)).
TARGET_RANGE = (Version("1.32.0"), Version("1.33.0"))
UPSTREAM = "onnxruntime.transformers.convert_generation"


def check_version() -> None:
    """Refuse onnxruntime versions this patch was not checked against."""
    installed = Version(metadata.version("onnxruntime"))
    low, high = TARGET_RANGE
    if not low <= installed < high:
        raise GenExportError(
            f"onnxruntime {installed} is not a version genexport's convert_generation patch was checked "
            f"against ({low} <= v < {high})",
            f"install onnxruntime>={low},<{high} (pip install 'onnxruntime>={low},<{high}')",
        )


@contextlib.contextmanager
def applied() -> Iterator[None]:
    """Bind `convert_generation.GPT2Config` to `AutoConfig` for the duration of the block."""
    check_version()
    from onnxruntime.transformers import convert_generation
    from transformers import AutoConfig

    with swapped(convert_generation, "GPT2Config", AutoConfig):
        yield


@contextlib.contextmanager
def swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    """Bind `owner.name` to `value` for the block, and restore the original afterwards, also on errors."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)
