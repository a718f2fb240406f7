"""Shared fixtures: demo checkpoints built by the project's own code (no hub), cached per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("GENEXPORT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow real-size run: set GENEXPORT_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo checkpoints go to a per-run cache unless GENEXPORT_CACHE points somewhere already."""
    if "GENEXPORT_CACHE" not in os.environ:
        os.environ["GENEXPORT_CACHE"] = str(tmp_path_factory.mktemp("genexport-cache"))
    return Path(os.environ["GENEXPORT_CACHE"])


@pytest.fixture(scope="session")
def tiny_biogpt(demo_cache: Path) -> Path:
    from gen_export.demo import cached_checkpoint

    return cached_checkpoint("tiny")


@pytest.fixture(scope="session")
def small_biogpt(demo_cache: Path) -> Path:
    from gen_export.demo import cached_checkpoint

    return cached_checkpoint("small")


@pytest.fixture(scope="session")
def wide_biogpt(demo_cache: Path) -> Path:
    from gen_export.demo import cached_checkpoint

    return cached_checkpoint("wide")
