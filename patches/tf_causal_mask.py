"""Give transformers 4.57's causal masks a vmap-free form the TorchScript exporter can trace.

Upstream: transformers.masking_utils.sdpa_mask (which `eager_mask` calls), checked on transformers 4.57.6.

Why: on 4.57, GPT-2 builds its 4D attention mask with `masking_utils.create_causal_mask`, which evaluates
the mask function over (batch, head, query, key) indices with `torch.vmap`. `torch.onnx.export(dynamo=False)`
cannot trace through vmap (`RuntimeError: unordered_map::at`). This patch swaps in `sdpa_mask_by_broadcast`,
which evaluates the same mask function once on broadcast index tensors: the same boolean mask, built from
ops the tracer knows. BioGPT and OPT on 4.57 still build their masks the pre-4.53 way and are unaffected.
optimum-onnx applied the same idea inside its exporter; genexport calls torch.onnx directly, so it lives here.

Not needed on transformers 5.x: its masks no longer use vmap (5.23 and 5.24 checked; `applied()` is a no-op
there). Versions outside both checked ranges are refused.

Remove when: genexport drops the transformers 4.57 line (the test
`tests/test_patches.py::test_gpt2_on_4_57_still_needs_vmap_free_mask` fails once 4.57's mask traces unpatched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import torch
from packaging.version import Version

from gen_export.errors import GenExportError
from gen_export.patches.ort_convert_generation import swapped

#: transformers releases whose masks need this patch ([low, high)).
TARGET_RANGE = (Version("4.57.0"), Version("4.58.0"))
#: transformers releases checked to trace without it ([low, high)).
NOT_NEEDED_RANGE = (Version("5.23.0"), Version("5.25.0"))
UPSTREAM = "transformers.masking_utils.sdpa_mask"


def installed_transformers() -> Version:
    return Version(metadata.version("transformers"))


def needed() -> bool:
    """True on the lines that need the patch, False on those checked without it; refuses any other version."""
    installed = installed_transformers()
    if TARGET_RANGE[0] <= installed < TARGET_RANGE[1]:
        return True
    if NOT_NEEDED_RANGE[0] <= installed < NOT_NEEDED_RANGE[1]:
        return False
    raise GenExportError(
        f"transformers {installed} is not a version genexport's export path was checked against "
        f"({TARGET_RANGE[0]} <= v < {TARGET_RANGE[1]} or {NOT_NEEDED_RANGE[0]} <= v < {NOT_NEEDED_RANGE[1]})",
        "install transformers 4.57.6 or 5.24.0 (see README's install section)",
    )


def sdpa_mask_by_broadcast(
    batch_size: int,
    cache_position: torch.Tensor,
    kv_length: int,
    kv_offset: int = 0,
    mask_function: Callable[..., torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    **kwargs: Any,
) -> torch.Tensor | None:
    """4.57's `sdpa_mask_recent_torch`, with the vmap replaced by broadcasting; same arguments and result."""
    from transformers import masking_utils as mu

    mask_function = mask_function or mu.causal_mask_function
    q_length = cache_position.shape[0]
    padding_mask = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
    if allow_is_causal_skip and mu._ignore_causal_mask_sdpa(padding_mask, q_length, kv_length, kv_offset, local_size):
        return None
    if padding_mask is not None:
        mask_function = mu.and_masks(mask_function, mu.padding_mask_function(padding_mask))
    device = cache_position.device
    batch = torch.arange(batch_size, device=device)[:, None, None, None]
    head = torch.arange(1, device=device)[None, :, None, None]
    query = cache_position[None, None, :, None]
    key = (torch.arange(kv_length, device=device) + kv_offset)[None, None, None, :]
    return mask_function(batch, head, query, key).expand(batch_size, -1, q_length, kv_length)


@contextlib.contextmanager
def applied() -> Iterator[None]:
    """On 4.57, bind `masking_utils.sdpa_mask` (and the registry's "sdpa" entry) to the broadcast form."""
    if not needed():
        yield
        return
    from transformers import masking_utils as mu

    registry = mu.ALL_MASK_ATTENTION_FUNCTIONS
    original_sdpa = registry["sdpa"]
    with swapped(mu, "sdpa_mask", sdpa_mask_by_broadcast):
        registry.register("sdpa", sdpa_mask_by_broadcast)
        try:
            yield
        finally:
            registry.register("sdpa", original_sdpa)
